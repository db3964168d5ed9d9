package pairing_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"errors"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/encoding/protojson"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/apiserver"
	"github.com/palyra/palyra/server/internal/pairing"
)

func TestCreatePINCode(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cases := map[string]struct {
		digits uint32
		want   int
	}{
		"default":  {0, pairing.DefaultPINDigits},
		"shortest": {6, 6},
		"eight":    {8, 8},
		"ten":      {10, 10},
		"longest":  {12, 12},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res := b.createCode(t, &controlplanev1.CreatePairingCodeRequest{
				Method: controlplanev1.PairingMethod_PAIRING_METHOD_PIN, PinDigits: tc.digits, Label: "rack 4",
			})
			pin := res.GetCode()
			if len(pin) != tc.want || strings.Trim(pin, "0123456789") != "" {
				t.Errorf("PIN %q: want %d decimal digits", pin, tc.want)
			}
			if res.GetPairingUri() != "" {
				t.Errorf("a PIN code has a pairing URI %q", res.GetPairingUri())
			}
			c := res.GetPairingCode()
			if c.GetMethod() != controlplanev1.PairingMethod_PAIRING_METHOD_PIN || c.GetState() != controlplanev1.PairingCodeState_PAIRING_CODE_STATE_ACTIVE ||
				c.GetLabel() != "rack 4" || c.GetCreatedBy() != admin.ID() || !ulidOK(c.GetId()) {
				t.Errorf("pairing code %v", c)
			}
			if res.GetCaFingerprint() != b.authority.Fingerprint() {
				t.Errorf("CA fingerprint %q, want %q", res.GetCaFingerprint(), b.authority.Fingerprint())
			}
		})
	}
	t.Run("too few digits", func(t *testing.T) {
		t.Parallel()
		_, err := b.admin.CreatePairingCode(t.Context(), connect.NewRequest(&controlplanev1.CreatePairingCodeRequest{
			Method: controlplanev1.PairingMethod_PAIRING_METHOD_PIN, PinDigits: 5,
		}))
		wantCode(t, err, connect.CodeInvalidArgument)
	})
	t.Run("configured default", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withOptions(func(o *pairing.Options) { o.PINDigits = func() int { return 11 } }))
		if pin := b.createPIN(t).GetCode(); len(pin) != 11 {
			t.Errorf("PIN %q: want the configured 11 digits", pin)
		}
	})
}

func TestRandomPINIsUniform(t *testing.T) {
	t.Parallel()
	const pins, digits = 10000, 10
	var counts [10]int
	for range pins {
		pin := pairing.RandomPIN(digits)
		if len(pin) != digits {
			t.Fatalf("PIN %q has %d digits, want %d", pin, len(pin), digits)
		}
		for _, r := range pin {
			if r < '0' || r > '9' {
				t.Fatalf("PIN %q has a non-digit", pin)
			}
			counts[r-'0']++
		}
	}
	// Chi-squared with 9 degrees of freedom; 40 is exceeded by chance with p < 1e-5.
	expected := float64(pins*digits) / 10
	var chi2 float64
	for _, n := range counts {
		chi2 += math.Pow(float64(n)-expected, 2) / expected
	}
	if chi2 > 40 {
		t.Errorf("digit counts %v are not uniform (chi-squared %.1f)", counts, chi2)
	}
}

func TestCreateQRCode(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := b.createQR(t)
	code := res.GetCode()
	id, secret, ok := strings.Cut(code, "_")
	if !ok || id != res.GetPairingCode().GetId() {
		t.Fatalf("QR code %q is not <code id>_<secret> for code %s", code, res.GetPairingCode().GetId())
	}
	raw, err := base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil {
		t.Fatalf("the secret %q is not lower-case unpadded base32: %v", secret, err)
	}
	if len(raw)*8 < 128 {
		t.Errorf("the QR secret has %d bits, want at least 128", len(raw)*8)
	}
	u, err := url.Parse(res.GetPairingUri())
	if err != nil {
		t.Fatalf("pairing URI %q: %v", res.GetPairingUri(), err)
	}
	q := u.Query()
	if u.Scheme != "palyra" || u.Host != "pair" || u.Path != "" ||
		q.Get("url") != publicURL || q.Get("code") != code || q.Get("ca") != b.authority.Fingerprint() || len(q) != 3 {
		t.Errorf("pairing URI %q: want palyra://pair?url=%s&code=%s&ca=%s", u, publicURL, code, b.authority.Fingerprint())
	}
	if !strings.HasPrefix(res.GetPairingUri(), "palyra://pair?url=") || !strings.HasSuffix(res.GetPairingUri(), "&ca="+b.authority.Fingerprint()) {
		t.Errorf("pairing URI %q is not in the documented form", res.GetPairingUri())
	}
	if res.GetPairingCode().GetMethod() != controlplanev1.PairingMethod_PAIRING_METHOD_QR {
		t.Errorf("method %v", res.GetPairingCode().GetMethod())
	}
	// Two codes never share a secret.
	if other := b.createQR(t).GetCode(); strings.SplitN(other, "_", 2)[1] == secret {
		t.Error("two QR codes have the same secret")
	}
}

func TestCodeTTLIsClamped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cases := map[string]struct {
		req  *controlplanev1.CreatePairingCodeRequest
		want time.Duration
	}{
		"unset":     {&controlplanev1.CreatePairingCodeRequest{}, 10 * time.Minute},
		"too short": {&controlplanev1.CreatePairingCodeRequest{Ttl: ttl(time.Second)}, 30 * time.Second},
		"zero":      {&controlplanev1.CreatePairingCodeRequest{Ttl: ttl(0)}, 30 * time.Second},
		"negative":  {&controlplanev1.CreatePairingCodeRequest{Ttl: ttl(-time.Hour)}, 30 * time.Second},
		"in range":  {&controlplanev1.CreatePairingCodeRequest{Ttl: ttl(2 * time.Hour)}, 2 * time.Hour},
		"too long":  {&controlplanev1.CreatePairingCodeRequest{Ttl: ttl(48 * time.Hour)}, 24 * time.Hour},
	}
	for name, tc := range cases {
		for _, method := range []controlplanev1.PairingMethod{controlplanev1.PairingMethod_PAIRING_METHOD_PIN, controlplanev1.PairingMethod_PAIRING_METHOD_QR} {
			t.Run(name+"/"+method.String(), func(t *testing.T) {
				t.Parallel()
				req := &controlplanev1.CreatePairingCodeRequest{Method: method, Ttl: tc.req.GetTtl()}
				c := b.createCode(t, req).GetPairingCode()
				if got := c.GetExpireTime().AsTime().Sub(c.GetCreateTime().AsTime()); got != tc.want {
					t.Errorf("the code lives %v, want %v", got, tc.want)
				}
				if !c.GetCreateTime().AsTime().Equal(b.clock.Now()) {
					t.Errorf("created at %v, want the clock's %v", c.GetCreateTime().AsTime(), b.clock.Now())
				}
			})
		}
	}
}

func TestCodesAreStoredAsMACsOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pin, qr := b.createPIN(t), b.createQR(t)
	for _, c := range []*controlplanev1.CreatePairingCodeResponse{pin, qr} {
		row, err := b.store.Q().GetPairingCode(t.Context(), c.GetPairingCode().GetId())
		if err != nil {
			t.Fatal(err)
		}
		secret := c.GetCode()
		if _, s, ok := strings.Cut(secret, "_"); ok {
			secret = s
		}
		if len(row.CodeMac) != 32 || bytes.Contains(row.CodeMac, []byte(secret)) {
			t.Errorf("code %s is stored as %x", row.ID, row.CodeMac)
		}
		// The documented form: HMAC-SHA256 under the MAC key of "<method>:<secret>".
		key, err := b.kek.DeriveKey("pairing-codes")
		if err != nil {
			t.Fatal(err)
		}
		m := hmac.New(sha256.New, key)
		m.Write([]byte(row.Method + ":" + secret))
		if !hmac.Equal(m.Sum(nil), row.CodeMac) {
			t.Errorf("code %s: the stored MAC is not HMAC-SHA256(key, %q)", row.ID, row.Method+":<secret>")
		}
	}
	res, err := b.admin.ListPairingCodes(t.Context(), connect.NewRequest(&controlplanev1.ListPairingCodesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	listed, err := protojson.Marshal(res.Msg)
	if err != nil {
		t.Fatal(err)
	}
	qrSecret := strings.SplitN(qr.GetCode(), "_", 2)[1]
	if strings.Contains(string(listed), pin.GetCode()) || strings.Contains(string(listed), qrSecret) {
		t.Errorf("the list of codes shows a secret: %s", listed)
	}
}

// refusal is the outcome of one presented code.
type refusal struct {
	code    connect.Code
	message string
	err     string
}

func TestStartPairingRefusesBadCodesAlike(t *testing.T) {
	t.Parallel()
	// Each case prepares a bundle and returns the request that must be refused.
	cases := map[string]func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest{
		"wrong PIN": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			req, _ := startReq(t, otherPIN(b.createPIN(t).GetCode()))
			return req
		},
		"PIN when no code exists": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			req, _ := startReq(t, "12345678")
			return req
		},
		"unknown QR code id": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			b.createQR(t)
			req, _ := startReq(t, ulid.Make().String()+"_"+strings.Repeat("a", 39))
			return req
		},
		"wrong QR secret": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			id := b.createQR(t).GetPairingCode().GetId()
			req, _ := startReq(t, id+"_"+strings.Repeat("a", 39))
			return req
		},
		"QR code without a separator": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			req, _ := startReq(t, "")
			req.Code = &nodev1.StartPairingRequest_QrCode{QrCode: strings.ReplaceAll(b.createQR(t).GetCode(), "_", "-")}
			return req
		},
		"reused PIN": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			pin := b.createPIN(t).GetCode()
			b.mustStart(t, pin)
			req, _ := startReq(t, pin)
			return req
		},
		"reused QR code": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			code := b.createQR(t).GetCode()
			b.mustStart(t, code)
			req, _ := startReq(t, code)
			return req
		},
		"expired PIN": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			pin := b.createCode(t, &controlplanev1.CreatePairingCodeRequest{Method: controlplanev1.PairingMethod_PAIRING_METHOD_PIN, Ttl: ttl(time.Minute)}).GetCode()
			b.clock.Advance(time.Minute)
			req, _ := startReq(t, pin)
			return req
		},
		"expired QR code": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			code := b.createCode(t, &controlplanev1.CreatePairingCodeRequest{Method: controlplanev1.PairingMethod_PAIRING_METHOD_QR, Ttl: ttl(time.Minute)}).GetCode()
			b.clock.Advance(time.Minute + time.Microsecond)
			req, _ := startReq(t, code)
			return req
		},
		"burned PIN": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			pin := b.createPIN(t).GetCode()
			for i := range pairing.MaxFailedAttempts {
				req, _ := startReq(t, otherPIN(pin))
				_, err := startWith(t, b.nodeFrom(byte(i+1)), req)
				wantCode(t, err, connect.CodePermissionDenied)
			}
			req, _ := startReq(t, pin)
			return req
		},
		"burned QR code": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			code := b.createQR(t).GetCode()
			id, _, _ := strings.Cut(code, "_")
			for range pairing.MaxFailedAttempts {
				req, _ := startReq(t, id+"_"+strings.Repeat("b", 39))
				_, err := b.start(t, req)
				wantCode(t, err, connect.CodePermissionDenied)
			}
			req, _ := startReq(t, code)
			return req
		},
		"deleted code": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			c := b.createPIN(t)
			if _, err := b.admin.DeletePairingCode(t.Context(), connect.NewRequest(&controlplanev1.DeletePairingCodeRequest{Id: c.GetPairingCode().GetId()})); err != nil {
				t.Fatal(err)
			}
			req, _ := startReq(t, c.GetCode())
			return req
		},
		"PIN code's id with its PIN as a QR code": func(t *testing.T, b *testBundle) *nodev1.StartPairingRequest {
			c := b.createPIN(t)
			req, _ := startReq(t, c.GetPairingCode().GetId()+"_"+c.GetCode())
			return req
		},
	}
	var (
		mu   sync.Mutex
		seen = map[string]refusal{}
	)
	t.Run("over the wire", func(t *testing.T) {
		for name, prepare := range cases {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				_, err := b.start(t, prepare(t, b))
				ce := wantCode(t, err, connect.CodePermissionDenied)
				mu.Lock()
				seen[name] = refusal{ce.Code(), ce.Message(), ce.Error()}
				mu.Unlock()
			})
		}
	})
	// A QR code in the pin field: protovalidate refuses it before the handler; the
	// handler alone refuses it alike too.
	t.Run("QR code in the pin field", func(t *testing.T) {
		b := setup(t)
		req, _ := startReq(t, b.createQR(t).GetCode())
		req.Code = &nodev1.StartPairingRequest_Pin{Pin: req.GetQrCode()}
		_, err := b.start(t, req)
		wantCode(t, err, connect.CodeInvalidArgument)
		// The handler's answer, translated as the edge does.
		direct := apiserver.ErrorInterceptor(slog.New(slog.DiscardHandler)).WrapUnary(func(ctx context.Context, _ connect.AnyRequest) (connect.AnyResponse, error) {
			return b.svc.NodeHandler().StartPairing(ctx, connect.NewRequest(req))
		})
		_, err = direct(t.Context(), connect.NewRequest(req))
		ce := wantCode(t, err, connect.CodePermissionDenied)
		mu.Lock()
		seen["QR code in the pin field"] = refusal{ce.Code(), ce.Message(), ce.Error()}
		mu.Unlock()
	})
	want := refusal{connect.CodePermissionDenied, pairing.CodeRefusal, "permission_denied: " + pairing.CodeRefusal}
	if len(seen) != len(cases)+1 {
		t.Fatalf("%d of %d cases answered", len(seen), len(cases)+1)
	}
	for name, got := range seen {
		if got != want {
			t.Errorf("%s: refused with %+v, want %+v", name, got, want)
		}
	}
}

// otherPIN returns a PIN of the same length that differs from pin in its first digit.
func otherPIN(pin string) string {
	d := (pin[0]-'0'+1)%10 + '0'
	return string(d) + pin[1:]
}

// ulidOK reports whether s is a canonical ULID.
func ulidOK(s string) bool {
	_, err := ulid.ParseStrict(s)
	return err == nil && strings.ToUpper(s) == s
}

// wrongPIN returns a PIN of the length of codes[0] that is none of theirs.
func wrongPIN(codes ...*controlplanev1.CreatePairingCodeResponse) string {
	wrong := codes[0].GetCode()
	for taken := true; taken; {
		wrong, taken = otherPIN(wrong), false
		for _, c := range codes {
			taken = taken || c.GetCode() == wrong
		}
	}
	return wrong
}

// wantPINLimited fails the test unless err refuses a PIN attempt over the per-address
// limit, with Retry-After the given number of seconds.
func wantPINLimited(t *testing.T, err error, retryAfter int) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
		t.Errorf("got %v, want resource_exhausted", err)
		return
	}
	if got := ce.Meta().Get("Retry-After"); got != strconv.Itoa(retryAfter) {
		t.Errorf("Retry-After %q, want %d (%q)", got, retryAfter, ce.Message())
	}
}

// TestWrongPINsFromOneAddressBurnNoCode: a wrong PIN names no code, so it used to count
// against every usable PIN code, and five of them from anyone who reaches the port
// burned them all (issue 10, item 8). An address is now refused after three, before its
// PIN is compared, and the code stays usable for the node it was made for.
func TestWrongPINsFromOneAddressBurnNoCode(t *testing.T) {
	t.Parallel()
	b := setup(t)
	code := b.createPIN(t)
	wrong := wrongPIN(code)
	attacker := b.nodeFrom(1)
	for i := range pairing.MaxFailedAttempts {
		req, _ := startReq(t, wrong)
		_, err := startWith(t, attacker, req)
		if i < pairing.MaxPINFailuresPerAddress {
			if ce := wantCode(t, err, connect.CodePermissionDenied); ce.Message() != pairing.CodeRefusal {
				t.Fatalf("wrong PIN %d refused with %q", i+1, ce.Message())
			}
			continue
		}
		// Refused until the code it guessed at is gone: it expires in 10 minutes.
		wantPINLimited(t, err, int(pairing.DefaultCodeTTL/time.Second))
	}
	got := b.listCodes(t)[code.GetPairingCode().GetId()]
	if got.GetState() != controlplanev1.PairingCodeState_PAIRING_CODE_STATE_ACTIVE || got.GetFailedAttempts() != pairing.MaxPINFailuresPerAddress {
		t.Errorf("after %d wrong PINs from one address the code is %v with %d failed attempts, want active with %d",
			pairing.MaxFailedAttempts, got.GetState(), got.GetFailedAttempts(), pairing.MaxPINFailuresPerAddress)
	}
	// The limit comes before the PIN is compared: the right PIN from that address is
	// refused too (it guesses nothing)...
	b.clock.Advance(time.Minute)
	req, _ := startReq(t, code.GetCode())
	_, err := startWith(t, attacker, req)
	wantPINLimited(t, err, int((pairing.DefaultCodeTTL-time.Minute)/time.Second))
	// ...and the node it was made for pairs with it.
	if _, err := startWith(t, b.nodeFrom(2), req); err != nil {
		t.Fatalf("the right PIN from another address: %v", err)
	}
}

// TestConcurrentWrongPINsTakeTurns: wrong PINs sent at once from one address are
// counted one after another, so that exactly MaxPINFailuresPerAddress of them are
// compared (and charged) and the others refused before their PIN is looked at; while
// they run, a right PIN from another address pairs.
func TestConcurrentWrongPINsTakeTurns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	code, other := b.createPIN(t), b.createPIN(t)
	wrong := wrongPIN(code, other)
	attacker := b.nodeFrom(1)
	const n = 2 * pairing.MaxPINFailuresPerAddress
	var (
		wg                        sync.WaitGroup
		mu                        sync.Mutex
		compared, limited, others int
		right                     error
	)
	begin := make(chan struct{})
	for range n {
		req, _ := startReq(t, wrong)
		wg.Go(func() {
			<-begin
			_, err := startWith(t, attacker, req)
			mu.Lock()
			defer mu.Unlock()
			var ce *connect.Error
			switch {
			case errors.As(err, &ce) && ce.Code() == connect.CodePermissionDenied && ce.Message() == pairing.CodeRefusal:
				compared++
			case errors.As(err, &ce) && ce.Code() == connect.CodeResourceExhausted:
				limited++
			default:
				others++
			}
		})
	}
	req, _ := startReq(t, code.GetCode())
	wg.Go(func() {
		<-begin
		_, right = startWith(t, b.nodeFrom(2), req)
	})
	close(begin)
	wg.Wait()
	if compared != pairing.MaxPINFailuresPerAddress || limited != n-pairing.MaxPINFailuresPerAddress || others != 0 {
		t.Errorf("%d wrong PINs at once: %d compared, %d limited, %d other answers; want %d compared",
			n, compared, limited, others, pairing.MaxPINFailuresPerAddress)
	}
	if right != nil {
		t.Errorf("the right PIN from another address: %v", right)
	}
	codes := b.listCodes(t)
	used, left := codes[code.GetPairingCode().GetId()], codes[other.GetPairingCode().GetId()]
	if used.GetState() != controlplanev1.PairingCodeState_PAIRING_CODE_STATE_USED {
		t.Errorf("the code of the right PIN is %v, want used", used.GetState())
	}
	if charged := used.GetFailedAttempts() + left.GetFailedAttempts(); charged != pairing.MaxPINFailuresPerAddress {
		t.Errorf("the codes were charged %d wrong PINs, want %d", charged, pairing.MaxPINFailuresPerAddress)
	}
}

// TestWrongPINsHaveAGlobalCeiling: the PIN codes together absorb five wrong guesses
// each, whatever the number of addresses: each wrong PIN is charged to the usable PIN
// code with the fewest failed attempts, and a code is burned at five. QR codes are not
// touched.
func TestWrongPINsHaveAGlobalCeiling(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := b.createPIN(t)
	b.clock.Advance(time.Second)
	second, qr := b.createPIN(t), b.createQR(t)
	wrong := wrongPIN(first, second)
	guesses := 0
	guess := func() {
		t.Helper()
		// Each address stays within its own limit.
		req, _ := startReq(t, wrong)
		_, err := startWith(t, b.nodeFrom(byte(1+guesses/pairing.MaxPINFailuresPerAddress)), req)
		if ce := wantCode(t, err, connect.CodePermissionDenied); ce.Message() != pairing.CodeRefusal {
			t.Fatalf("wrong PIN %d refused with %q", guesses+1, ce.Message())
		}
		guesses++
	}
	state := func() (attempts []uint32, burned int) {
		codes := b.listCodes(t)
		for _, c := range []*controlplanev1.CreatePairingCodeResponse{first, second} {
			got := codes[c.GetPairingCode().GetId()]
			attempts = append(attempts, got.GetFailedAttempts())
			if got.GetState() == controlplanev1.PairingCodeState_PAIRING_CODE_STATE_BURNED {
				burned++
			}
		}
		return attempts, burned
	}
	for guesses < 2*pairing.MaxFailedAttempts-1 {
		guess()
		attempts, burned := state()
		if attempts[0]+attempts[1] != uint32(guesses) || attempts[0] < attempts[1] || attempts[0]-attempts[1] > 1 {
			t.Fatalf("after %d wrong PINs the codes have %v failed attempts: want them spread, the older first", guesses, attempts)
		}
		// Nothing burns before the older code has absorbed its five.
		if want := guesses / (2*pairing.MaxFailedAttempts - 1); burned != want {
			t.Fatalf("after %d wrong PINs %d codes are burned, want %d", guesses, burned, want)
		}
	}
	// The second code is still usable with four failed attempts; one more burns it.
	guess()
	if attempts, burned := state(); burned != 2 || attempts[0] != pairing.MaxFailedAttempts || attempts[1] != pairing.MaxFailedAttempts {
		t.Fatalf("after %d wrong PINs: %v failed attempts, %d burned; want both burned at %d", guesses, attempts, burned, pairing.MaxFailedAttempts)
	}
	for _, c := range []*controlplanev1.CreatePairingCodeResponse{first, second} {
		req, _ := startReq(t, c.GetCode())
		_, err := startWith(t, b.nodeFrom(200), req)
		wantCode(t, err, connect.CodePermissionDenied)
	}
	if got := b.listCodes(t)[qr.GetPairingCode().GetId()]; got.GetState() != controlplanev1.PairingCodeState_PAIRING_CODE_STATE_ACTIVE || got.GetFailedAttempts() != 0 {
		t.Errorf("wrong PINs touched the QR code: %v with %d failed attempts", got.GetState(), got.GetFailedAttempts())
	}
	b.mustStart(t, qr.GetCode())
	// A PIN code created after the burn works.
	b.mustStart(t, b.createPIN(t).GetCode())
}

// TestPINLimitLastsWhileTheCodesDo: an address's wrong PINs count while a PIN code that
// was usable when it guessed is usable; a code created later does not lift the limit,
// the end of the older codes does.
func TestPINLimitLastsWhileTheCodesDo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	older := b.createCode(t, &controlplanev1.CreatePairingCodeRequest{Method: controlplanev1.PairingMethod_PAIRING_METHOD_PIN, Ttl: ttl(5 * time.Minute)})
	b.clock.Advance(time.Minute)
	guesser := b.nodeFrom(1)
	for range pairing.MaxPINFailuresPerAddress {
		req, _ := startReq(t, wrongPIN(older))
		_, err := startWith(t, guesser, req)
		wantCode(t, err, connect.CodePermissionDenied)
	}
	b.clock.Advance(time.Minute)
	newer := b.createPIN(t)
	req, _ := startReq(t, wrongPIN(older, newer))
	_, err := startWith(t, guesser, req)
	wantPINLimited(t, err, int(3*time.Minute/time.Second)) // until the older code expires
	b.clock.Advance(3 * time.Minute)
	_, err = startWith(t, guesser, req)
	if ce := wantCode(t, err, connect.CodePermissionDenied); ce.Message() != pairing.CodeRefusal {
		t.Errorf("once the older code expired: %q", ce.Message())
	}
	if got := b.listCodes(t)[newer.GetPairingCode().GetId()].GetFailedAttempts(); got != 1 {
		t.Errorf("the newer code has %d failed attempts, want 1", got)
	}
	// The sweeper forgets wrong PINs older than any code can live.
	count := func() int {
		t.Helper()
		var n int
		if err := b.store.Pool().QueryRow(t.Context(), "select count(*) from pairing_pin_failures").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	b.svc.Sweep(t.Context())
	if n := count(); n != pairing.MaxPINFailuresPerAddress+1 {
		t.Errorf("%d wrong PINs recorded, want %d", n, pairing.MaxPINFailuresPerAddress+1)
	}
	b.clock.Advance(pairing.MaxCodeTTL + time.Second)
	b.svc.Sweep(t.Context())
	if n := count(); n != 0 {
		t.Errorf("%d wrong PINs older than any code are kept", n)
	}
}

func TestWrongQRSecretBurnsOnlyItsCode(t *testing.T) {
	t.Parallel()
	b := setup(t)
	target, other, pin := b.createQR(t), b.createQR(t), b.createPIN(t)
	id, _, _ := strings.Cut(target.GetCode(), "_")
	for range pairing.MaxFailedAttempts {
		req, _ := startReq(t, id+"_"+strings.Repeat("c", 39))
		_, err := b.start(t, req)
		wantCode(t, err, connect.CodePermissionDenied)
	}
	// Unknown code ids count against nothing.
	req, _ := startReq(t, ulid.Make().String()+"_"+strings.Repeat("c", 39))
	_, err := b.start(t, req)
	wantCode(t, err, connect.CodePermissionDenied)

	codes := b.listCodes(t)
	if got := codes[target.GetPairingCode().GetId()]; got.GetState() != controlplanev1.PairingCodeState_PAIRING_CODE_STATE_BURNED || got.GetFailedAttempts() != pairing.MaxFailedAttempts {
		t.Errorf("the attacked QR code is %v with %d failed attempts", got.GetState(), got.GetFailedAttempts())
	}
	for _, c := range []*controlplanev1.CreatePairingCodeResponse{other, pin} {
		if got := codes[c.GetPairingCode().GetId()]; got.GetState() != controlplanev1.PairingCodeState_PAIRING_CODE_STATE_ACTIVE || got.GetFailedAttempts() != 0 {
			t.Errorf("code %s is %v with %d failed attempts; it was not attacked", got.GetId(), got.GetState(), got.GetFailedAttempts())
		}
	}
	req, _ = startReq(t, target.GetCode())
	_, err = b.start(t, req)
	wantCode(t, err, connect.CodePermissionDenied)
	b.mustStart(t, other.GetCode())
	b.mustStart(t, pin.GetCode())
}

func TestStartPairingRefusesBadCSRs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pin := b.createPIN(t).GetCode()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	badSignature := csrFor(t, testpki.Key(t))
	badSignature[len(badSignature)-1] ^= 0x01
	if _, err := x509.ParseCertificateRequest(badSignature); err != nil {
		t.Fatalf("the CSR with a bad signature does not even parse: %v", err)
	}
	// Signed by one key, carrying another's public key.
	swapped := func() []byte {
		a, c := csrFor(t, testpki.Key(t)), csrFor(t, testpki.Key(t))
		ra, _ := x509.ParseCertificateRequest(a)
		rc, _ := x509.ParseCertificateRequest(c)
		out := bytes.Replace(a, ra.RawSubjectPublicKeyInfo, rc.RawSubjectPublicKeyInfo, 1)
		if bytes.Equal(out, a) {
			t.Fatal("could not swap the public key")
		}
		return out
	}()
	cases := map[string]struct {
		csr  []byte
		want string
	}{
		"not DER":          {bytes.Repeat([]byte{0x30, 0x82}, 40), "not a PKCS#10 request"},
		"truncated":        {csrFor(t, testpki.Key(t))[:100], "not a PKCS#10 request"},
		"RSA key":          {csrFor(t, rsaKey), "ECDSA P-256"},
		"P-384 key":        {csrFor(t, p384), "ECDSA P-256"},
		"bad signature":    {badSignature, "signature"},
		"another's key":    {swapped, "signature"},
		"certificate, not": {b.authority.Certificate().Raw, "not a PKCS#10 request"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			req, _ := startReq(t, pin)
			req.Csr = tc.csr
			_, err := b.start(t, req)
			ce := wantCode(t, err, connect.CodeInvalidArgument)
			if !strings.Contains(ce.Message(), tc.want) {
				t.Errorf("refused with %q, want it to say %q", ce.Message(), tc.want)
			}
		})
	}
	// None of the refusals used, or counted against, the code.
	b.mustStart(t, pin)
	for _, c := range b.listCodes(t) {
		if c.GetFailedAttempts() != 0 {
			t.Errorf("code %s has %d failed attempts", c.GetId(), c.GetFailedAttempts())
		}
	}
}

func TestConcurrentStartsWithOneCode(t *testing.T) {
	t.Parallel()
	for _, method := range []string{"pin", "qr"} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			code := b.createPIN(t).GetCode()
			if method == "qr" {
				code = b.createQR(t).GetCode()
			}
			const n = 8
			reqs := make([]*nodev1.StartPairingRequest, n)
			for i := range reqs {
				reqs[i], _ = startReq(t, code)
			}
			var (
				wg        sync.WaitGroup
				mu        sync.Mutex
				wins      int
				refusals  int
				unexpects []error
			)
			begin := make(chan struct{})
			for _, req := range reqs {
				wg.Go(func() {
					<-begin
					_, err := b.start(t, req)
					mu.Lock()
					defer mu.Unlock()
					var ce *connect.Error
					switch {
					case err == nil:
						wins++
					case errors.As(err, &ce) && ce.Code() == connect.CodePermissionDenied && ce.Message() == pairing.CodeRefusal:
						refusals++
					default:
						unexpects = append(unexpects, err)
					}
				})
			}
			close(begin)
			wg.Wait()
			if wins != 1 || refusals != n-1 || len(unexpects) > 0 {
				t.Errorf("%d wins, %d refusals, unexpected errors %v; want exactly one win", wins, refusals, unexpects)
			}
			rows, err := b.store.Q().ListPairingRequests(t.Context(), listAll())
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 {
				t.Errorf("%d requests in the database, want 1", len(rows))
			}
		})
	}
}

func TestStartPairingIsRateLimited(t *testing.T) {
	t.Parallel()
	b := setup(t)
	code := b.createQR(t).GetCode()
	for i := range pairing.StartBurst {
		req, _ := startReq(t, ulid.Make().String()+"_"+strings.Repeat("d", 39))
		_, err := b.start(t, req)
		if ce := wantCode(t, err, connect.CodePermissionDenied); ce.Message() != pairing.CodeRefusal {
			t.Fatalf("start %d: %q", i+1, ce.Message())
		}
	}
	// The right code too is refused now: the limit comes before the code.
	req, _ := startReq(t, code)
	_, err := b.start(t, req)
	ce := wantCode(t, err, connect.CodeResourceExhausted)
	retry, perr := strconv.Atoi(ce.Meta().Get("Retry-After"))
	if perr != nil || retry < 1 || retry > 60 {
		t.Errorf("Retry-After %q: want whole seconds within 1..60", ce.Meta().Get("Retry-After"))
	}
	if b.listCodes(t)[strings.SplitN(code, "_", 2)[0]].GetState() != controlplanev1.PairingCodeState_PAIRING_CODE_STATE_ACTIVE {
		t.Error("a refused start used the code")
	}
	// The bucket refills with time.
	b.clock.Advance(time.Duration(retry) * time.Second)
	b.mustStart(t, code)
}

func TestListAndDeletePairingCodes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	active := b.createPIN(t)
	b.clock.Advance(time.Second)
	used := b.createQR(t)
	b.mustStart(t, used.GetCode())
	b.clock.Advance(time.Second)
	expired := b.createCode(t, &controlplanev1.CreatePairingCodeRequest{Method: controlplanev1.PairingMethod_PAIRING_METHOD_QR, Ttl: ttl(time.Minute)})
	b.clock.Advance(time.Second)
	deleted := b.createPIN(t)
	b.clock.Advance(time.Minute)
	fresh := b.createQR(t)

	del := func(id string) error {
		_, err := b.admin.DeletePairingCode(t.Context(), connect.NewRequest(&controlplanev1.DeletePairingCodeRequest{Id: id}))
		return err
	}
	if err := del(deleted.GetPairingCode().GetId()); err != nil {
		t.Fatalf("delete an active code: %v", err)
	}
	if got := b.calls.last("/palyra.controlplane.v1.PairingService/DeletePairingCode"); got != "pairing_code:"+deleted.GetPairingCode().GetId() {
		t.Errorf("audit target %q", got)
	}
	for name, id := range map[string]string{"deleted": deleted.GetPairingCode().GetId(), "used": used.GetPairingCode().GetId()} {
		ce := wantCode(t, del(id), connect.CodeFailedPrecondition)
		if !strings.Contains(ce.Message(), name) {
			t.Errorf("deleting a %s code: %q does not say so", name, ce.Message())
		}
	}
	wantCode(t, del(ulid.Make().String()), connect.CodeNotFound)

	want := map[string]controlplanev1.PairingCodeState{
		active.GetPairingCode().GetId():  controlplanev1.PairingCodeState_PAIRING_CODE_STATE_ACTIVE,
		used.GetPairingCode().GetId():    controlplanev1.PairingCodeState_PAIRING_CODE_STATE_USED,
		expired.GetPairingCode().GetId(): controlplanev1.PairingCodeState_PAIRING_CODE_STATE_EXPIRED,
		deleted.GetPairingCode().GetId(): controlplanev1.PairingCodeState_PAIRING_CODE_STATE_DELETED,
		fresh.GetPairingCode().GetId():   controlplanev1.PairingCodeState_PAIRING_CODE_STATE_ACTIVE,
	}
	// Page through two at a time, newest first.
	var ids []string
	token := ""
	for page := 0; ; page++ {
		res, err := b.admin.ListPairingCodes(t.Context(), connect.NewRequest(&controlplanev1.ListPairingCodesRequest{PageSize: 2, PageToken: token}))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Msg.GetPairingCodes() {
			ids = append(ids, c.GetId())
			if c.GetState() != want[c.GetId()] {
				t.Errorf("code %s is %v, want %v", c.GetId(), c.GetState(), want[c.GetId()])
			}
		}
		if token = res.Msg.GetNextPageToken(); token == "" || page > 5 {
			break
		}
	}
	newestFirst := []string{fresh.GetPairingCode().GetId(), deleted.GetPairingCode().GetId(), expired.GetPairingCode().GetId(),
		used.GetPairingCode().GetId(), active.GetPairingCode().GetId()}
	if strings.Join(ids, ",") != strings.Join(newestFirst, ",") {
		t.Errorf("listed %v, want %v", ids, newestFirst)
	}
	if u := b.listCodes(t)[used.GetPairingCode().GetId()]; u.GetRequestId() == "" {
		t.Error("the used code does not name its request")
	}
	res, err := b.admin.ListPairingCodes(t.Context(), connect.NewRequest(&controlplanev1.ListPairingCodesRequest{ActiveOnly: true}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(res.Msg.GetPairingCodes()); n != 2 {
		t.Errorf("%d active codes, want 2", n)
	}
	_, err = b.admin.ListPairingCodes(t.Context(), connect.NewRequest(&controlplanev1.ListPairingCodesRequest{PageToken: "bm90IGEgdG9rZW4"}))
	wantCode(t, err, connect.CodeInvalidArgument)
}

// TestCodesVerifyUnderOlderMACKeys: during a master key rotation a replica whose
// primary is the new key stores new codes under the new MAC key and still accepts codes
// stored under an older one (Options.OlderMACKeys); a replica with the old key alone
// does not know codes stored under the new one.
func TestCodesVerifyUnderOlderMACKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	newMAC := bytes.Repeat([]byte{0x5a}, 32)
	rotated := b.replica(t, withOptions(func(o *pairing.Options) {
		o.OlderMACKeys = [][]byte{o.MACKey}
		o.MACKey = newMAC
	}))
	oldPIN, oldQR := b.createPIN(t).GetCode(), b.createQR(t).GetCode()
	for _, code := range []string{oldPIN, oldQR} {
		req, _ := startReq(t, code)
		if _, err := rotated.start(t, req); err != nil {
			t.Errorf("a code stored under the older MAC key, on the rotated replica: %v", err)
		}
	}
	newPIN, newQR := rotated.createPIN(t).GetCode(), rotated.createQR(t).GetCode()
	for _, code := range []string{newPIN, newQR} {
		req, _ := startReq(t, code)
		if _, err := b.start(t, req); err == nil {
			t.Errorf("a code stored under the new MAC key was accepted by the replica without it")
		}
		req, _ = startReq(t, code)
		if _, err := rotated.start(t, req); err != nil {
			t.Errorf("a code stored under the new MAC key, on the rotated replica: %v", err)
		}
	}
}
