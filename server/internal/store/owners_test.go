package store_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// queryOwners names the package of server/internal that runs the queries of each file
// of sqlc/queries (by the name of the file sqlc generates from it).
var queryOwners = map[string]string{
	"access.sql.go":     "access",
	"audit.sql.go":      "audit",
	"config.sql.go":     "liveconfig",
	"devices.sql.go":    "devices",
	"dispatch.sql.go":   "dispatch",
	"flags.sql.go":      "flags",
	"identity.sql.go":   "identity",
	"masterkey.sql.go":  "masterkey",
	"nodes.sql.go":      "dispatch", // a device's runtime columns: sessions, presence, capabilities
	"pairing.sql.go":    "pairing",
	"sessions.sql.go":   "access",
	"vault.sql.go":      "vault",
	"status.sql.go":     "store", // Ping
	"usage.sql.go":      "compat",
	"agents.sql.go":     "agents",
	"agent_runs.sql.go": "agents",
	"approvals.sql.go":  "approvals",
	"browser.sql.go":    "browser",
}

// TestQueriesStayWithTheirOwner checks that sqlc rows stay inside the package that owns
// the table: only the owner of a query file calls its queries (by method name: another
// method that shares a query's name needs another name), and no exported function
// outside this package takes or returns a dbsqlc type. Another package joins the
// owner's work through the owner's exported functions, passing a Tx or a Queryer.
func TestQueriesStayWithTheirOwner(t *testing.T) {
	t.Parallel()
	owner := map[string]string{} // query method → package
	files, err := filepath.Glob("../../../gen/dbsqlc/*.sql.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("gen/dbsqlc: %v", err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		pkg, ok := queryOwners[filepath.Base(f)]
		if !ok {
			t.Errorf("%s: no owner in queryOwners: name the package that runs its queries", f)
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv != nil {
				owner[fn.Name.Name] = pkg
			}
		}
	}
	if len(owner) < 50 {
		t.Fatalf("found %d query methods in gen/dbsqlc; the parser is broken", len(owner))
	}

	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		pkg := strings.Split(filepath.ToSlash(path), "/")[1] // ../<pkg>/...
		file, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if o, isQuery := owner[sel.Sel.Name]; isQuery && o != pkg {
					t.Errorf("%s: package %s runs query %s, which package %s owns: call an exported function of %s",
						fset.Position(n.Pos()), pkg, sel.Sel.Name, o, o)
				}
			case *ast.FuncDecl:
				if pkg != "store" && n.Name.IsExported() && mentionsDBSQLC(n.Type) {
					t.Errorf("%s: exported %s takes or returns a dbsqlc type: use the package's domain types, and store.Tx or store.Queryer for a transaction",
						fset.Position(n.Pos()), n.Name.Name)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// mentionsDBSQLC reports whether a function type names a type of package dbsqlc.
func mentionsDBSQLC(fn *ast.FuncType) bool {
	found := false
	ast.Inspect(fn, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == "dbsqlc" {
				found = true
			}
		}
		return !found
	})
	return found
}
