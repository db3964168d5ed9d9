package access_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	_ "google.golang.org/protobuf/types/known/emptypb" // registers google/protobuf/empty.proto for the synthetic file

	_ "github.com/palyra/palyra/gen/go/palyra/access/v1"       // registers the service
	_ "github.com/palyra/palyra/gen/go/palyra/compat/v1"       // registers the service
	_ "github.com/palyra/palyra/gen/go/palyra/controlplane/v1" // registers the service
	_ "github.com/palyra/palyra/gen/go/palyra/node/v1"         // registers the service
	optionsv1 "github.com/palyra/palyra/gen/go/palyra/options/v1"
	"github.com/palyra/palyra/server/internal/access"
)

// TestEveryRPCDeclaresItsAccess walks every method of every service in the palyra.*
// packages and fails when one lacks a valid access declaration.
func TestEveryRPCDeclaresItsAccess(t *testing.T) {
	t.Parallel()
	var services []string
	methods := 0
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(fd.Package()), "palyra.") {
			return true
		}
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			services = append(services, string(sd.FullName()))
			for j := range sd.Methods().Len() {
				methods++
				if _, err := access.Declaration(sd.Methods().Get(j)); err != nil {
					t.Error(err)
				}
			}
		}
		return true
	})
	for _, want := range []string{
		"palyra.controlplane.v1.StatusService", "palyra.node.v1.NodeService",
		"palyra.access.v1.AccessService", "palyra.access.v1.FeatureFlagService",
		"palyra.access.v1.AuditService", "palyra.compat.v1.CompatService",
	} {
		if !slices.Contains(services, want) {
			t.Errorf("service %s was not found in the registry (found %v)", want, services)
		}
	}
	t.Logf("%d services, %d methods checked", len(services), methods)
}

// TestDeclarationRefusesBadOptions proves the check is not vacuous: it builds methods
// with missing and malformed declarations and expects each to be refused.
func TestDeclarationRefusesBadOptions(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		access  *optionsv1.Access // nil: no option at all
		wantErr string
	}{
		"no option":          {nil, "declares no"},
		"empty requirement":  {&optionsv1.Access{}, "sets no requirement"},
		"public false":       {&optionsv1.Access{Requirement: &optionsv1.Access_Public{Public: false}}, "public must be true"},
		"device false":       {&optionsv1.Access{Requirement: &optionsv1.Access_Device{}}, "device must be true"},
		"unknown permission": {&optionsv1.Access{Requirement: &optionsv1.Access_Permission{Permission: "nodes.destroy"}}, "not in the catalog"},
		"valid permission":   {&optionsv1.Access{Requirement: &optionsv1.Access_Permission{Permission: "nodes.read"}}, ""},
		"valid public":       {&optionsv1.Access{Requirement: &optionsv1.Access_Public{Public: true}}, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := access.Declaration(syntheticMethod(t, tc.access))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("refused a valid declaration: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// syntheticMethod builds test.v1.TestService.Do with the given access option.
func syntheticMethod(t *testing.T, a *optionsv1.Access) protoreflect.MethodDescriptor {
	t.Helper()
	opts := &descriptorpb.MethodOptions{}
	if a != nil {
		proto.SetExtension(opts, optionsv1.E_Access, a)
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("test/v1/test.proto"),
		Package:    proto.String("test.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/empty.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("TestService"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name:       proto.String("Do"),
				InputType:  proto.String(".google.protobuf.Empty"),
				OutputType: proto.String(".google.protobuf.Empty"),
				Options:    opts,
			}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Services().Get(0).Methods().Get(0)
}
