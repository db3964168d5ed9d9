package access

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	optionsv1 "github.com/palyra/palyra/gen/go/palyra/options/v1"
)

// Declaration returns the access rule an RPC declares with the
// `(palyra.options.v1.access)` method option, or an error when the method declares
// none, declares an empty or false requirement, or names a permission that is not in
// the catalog. Every Palyra RPC must pass.
func Declaration(md protoreflect.MethodDescriptor) (*optionsv1.Access, error) {
	a, ok := proto.GetExtension(md.Options(), optionsv1.E_Access).(*optionsv1.Access)
	if !ok || a == nil {
		return nil, fmt.Errorf("%s declares no (palyra.options.v1.access) option", md.FullName())
	}
	switch r := a.GetRequirement().(type) {
	case *optionsv1.Access_Public:
		if !r.Public {
			return nil, fmt.Errorf("%s: public must be true when set", md.FullName())
		}
	case *optionsv1.Access_Authenticated:
		if !r.Authenticated {
			return nil, fmt.Errorf("%s: authenticated must be true when set", md.FullName())
		}
	case *optionsv1.Access_Device:
		if !r.Device {
			return nil, fmt.Errorf("%s: device must be true when set", md.FullName())
		}
	case *optionsv1.Access_Permission:
		if !Known(Permission(r.Permission)) {
			return nil, fmt.Errorf("%s requires permission %q, which is not in the catalog", md.FullName(), r.Permission)
		}
	default:
		return nil, fmt.Errorf("%s: its access option sets no requirement", md.FullName())
	}
	return a, nil
}
