package pairing

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/pagetoken"
	"github.com/palyra/palyra/server/internal/store"
)

// Methods of pairing codes, as stored.
const (
	methodPIN = "pin"
	methodQR  = "qr"
)

// States of pairing codes, computed from their columns.
const (
	codeActive  = "active"
	codeUsed    = "used"
	codeExpired = "expired"
	codeBurned  = "burned"
	codeDeleted = "deleted"
)

// qrSecretBytes is the entropy of a QR secret: 192 bits.
const qrSecretBytes = 24

// qrSeparator separates the code id from the secret in a QR code.
const qrSeparator = "_"

// secretEncoding writes QR secrets: lower-case base32 without padding, so that the code
// is made of [A-Z0-9_a-z] only.
var secretEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// codeState computes the state of a code at now.
func codeState(c dbsqlc.PairingCode, now time.Time) string {
	switch {
	case c.UsedAt != nil:
		return codeUsed
	case c.BurnedAt != nil:
		return codeBurned
	case c.DeletedAt != nil:
		return codeDeleted
	case !c.ExpiresAt.After(now):
		return codeExpired
	default:
		return codeActive
	}
}

// mac is what the database keeps of a new code: HMAC-SHA256 under the MAC key of the
// method and the secret ("pin:12345678", "qr:<secret>").
func (s *Service) mac(method, secret string) []byte {
	return macUnder(s.opts.MACKey, method, secret)
}

// macs are the MACs a stored code may have: under the MAC key and under each older one
// (Options.OlderMACKeys), the MAC key's first.
func (s *Service) macs(method, secret string) [][]byte {
	out := [][]byte{s.mac(method, secret)}
	for _, k := range s.opts.OlderMACKeys {
		out = append(out, macUnder(k, method, secret))
	}
	return out
}

// macUnder is HMAC-SHA256 under key of the method and the secret.
func macUnder(key []byte, method, secret string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(method + ":" + secret))
	return m.Sum(nil)
}

// randomPIN returns n uniformly random decimal digits from crypto/rand: bytes of 250
// and above are rejected, so that every digit has probability 1/10.
func randomPIN(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, n+8)
	for len(out) < n {
		_, _ = rand.Read(buf) // never fails since Go 1.24
		for _, b := range buf {
			if b < 250 && len(out) < n {
				out = append(out, '0'+b%10)
			}
		}
	}
	return string(out)
}

// randomToken returns n random bytes in secretEncoding.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return secretEncoding.EncodeToString(b)
}

// clampTTL applies the default and the bounds to a requested code lifetime; ttl nil
// means the creator did not ask.
func clampTTL(ttl *time.Duration) time.Duration {
	if ttl == nil {
		return DefaultCodeTTL
	}
	return min(max(*ttl, MinCodeTTL), MaxCodeTTL)
}

// createCodeParams describe a code to create.
type createCodeParams struct {
	method    string
	ttl       *time.Duration
	label     string
	pinDigits int // 0: the configured default
	createdBy string
}

// createdCode is a new code and its secret, shown once.
type createdCode struct {
	row  dbsqlc.PairingCode
	code string // the PIN, or "<id>_<secret>"
	uri  string // the QR pairing URI; "" for a PIN
}

// createCode creates a pairing code.
func (s *Service) createCode(ctx context.Context, p createCodeParams) (*createdCode, error) {
	now := s.now()
	id := ulid.Make().String()
	var code string
	var mac []byte
	switch p.method {
	case methodPIN:
		digits := p.pinDigits
		if digits == 0 {
			digits = s.opts.PINDigits()
		}
		if digits < MinPINDigits || digits > MaxPINDigits {
			return nil, errInvalid("pin_digits must be within %d..%d, not %d", MinPINDigits, MaxPINDigits, digits)
		}
		pin, err := s.uniquePIN(ctx, digits, now)
		if err != nil {
			return nil, err
		}
		code, mac = pin, s.mac(methodPIN, pin)
	case methodQR:
		secret := randomToken(qrSecretBytes)
		code, mac = id+qrSeparator+secret, s.mac(methodQR, secret)
	default:
		return nil, errInvalid("method must be pin or qr")
	}
	audit.SetTarget(ctx, "pairing_code:"+id) // before the insert, which writes the call's audit outbox row
	row, err := s.opts.Store.Q().InsertPairingCode(ctx, dbsqlc.InsertPairingCodeParams{
		ID:        id,
		Method:    p.method,
		CodeMac:   mac,
		Label:     p.label,
		CreatedBy: p.createdBy,
		CreatedAt: now,
		ExpiresAt: now.Add(clampTTL(p.ttl)),
	})
	if err != nil {
		return nil, fmt.Errorf("pairing: create code: %w", err)
	}
	out := &createdCode{row: row, code: code}
	if p.method == methodQR {
		out.uri = s.pairingURI(code)
	}
	s.log.Info("pairing code created", "code_id", id, "method", p.method, "expires_at", row.ExpiresAt, "created_by", p.createdBy)
	return out, nil
}

// uniquePIN draws a PIN that no usable PIN code has, so that a PIN names one code.
// (With 8 digits a collision is a one-in-a-hundred-million event; the check makes it
// harmless rather than rare.)
func (s *Service) uniquePIN(ctx context.Context, digits int, now time.Time) (string, error) {
	active, err := s.opts.Store.Q().ListActivePairingCodes(ctx, dbsqlc.ListActivePairingCodesParams{Method: methodPIN, Now: now})
	if err != nil {
		return "", fmt.Errorf("pairing: list active PIN codes: %w", err)
	}
	for range 16 {
		pin := randomPIN(digits)
		if _, found := matchMAC(active, s.macs(methodPIN, pin)); !found {
			return pin, nil
		}
	}
	return "", errFailedPrecondition("could not draw a PIN that no active code has: delete unused PIN codes or use more digits")
}

// pairingURI is the URI of a QR code:
// palyra://pair?url=<PublicURL>&code=<code>&ca=sha256:<hex>.
func (s *Service) pairingURI(code string) string {
	return "palyra://pair?url=" + url.QueryEscape(s.opts.PublicURL) +
		"&code=" + url.QueryEscape(code) +
		"&ca=" + s.opts.Authority.Fingerprint()
}

// matchMAC compares each of macs with the MAC of every code, in constant time for each
// and without stopping at a match, and returns the id of the (first) matching code.
func matchMAC(codes []dbsqlc.PairingCode, macs [][]byte) (id string, found bool) {
	for _, c := range codes {
		if anyMAC(c.CodeMac, macs) && !found {
			id, found = c.ID, true
		}
	}
	return id, found
}

// anyMAC reports whether mac is one of macs, comparing with every one in constant time.
func anyMAC(mac []byte, macs [][]byte) bool {
	found := false
	for _, m := range macs {
		found = hmac.Equal(mac, m) || found
	}
	return found
}

// presentedCode is a pairing code as a node presents it: exactly one of the fields.
type presentedCode struct {
	pin    string
	qrCode string
}

// verifyCode checks a presented code, from the source address, against the usable
// codes and returns the id of the code it matches, or a refusal: errCodeRefused, or a
// rate limit of wrong PINs. A wrong QR secret counts a failed attempt against its code;
// a wrong PIN as verifyPIN says. The code is not used here: the caller uses it in the
// transaction that creates the request.
func (s *Service) verifyCode(ctx context.Context, p presentedCode, address string) (string, error) {
	now := s.now()
	switch {
	case p.pin != "" && p.qrCode == "":
		return s.verifyPIN(ctx, p.pin, address, now)
	case p.qrCode != "" && p.pin == "":
		id, secret, ok := strings.Cut(p.qrCode, qrSeparator)
		if !ok || !isULID(id) || secret == "" {
			return "", errCodeRefused()
		}
		c, err := s.opts.Store.Q().GetPairingCode(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return "", errCodeRefused()
		}
		if err != nil {
			return "", fmt.Errorf("pairing: get code: %w", err)
		}
		if c.Method != methodQR {
			// A PIN code's id in a QR code: its secret was never a QR secret.
			return "", errCodeRefused()
		}
		if anyMAC(c.CodeMac, s.macs(methodQR, secret)) {
			if codeState(c, now) != codeActive {
				return "", errCodeRefused()
			}
			return c.ID, nil
		}
		if err := s.countFailure(ctx, s.opts.Store.Q(), []string{c.ID}, now); err != nil {
			return "", err
		}
		return "", errCodeRefused()
	default:
		return "", errCodeRefused()
	}
}

// verifyPIN checks a PIN against every usable PIN code. PIN attempts take turns (an
// advisory lock until the attempt's transaction ends), and a PIN names no code, so a
// wrong one is counted twice: against the source address, which is refused before its
// PIN is compared once it has MaxPINFailuresPerAddress wrong PINs from while a PIN code
// usable now was usable; and against the usable PIN code with the fewest failed
// attempts (the oldest of those), locked, which burns at MaxFailedAttempts. One
// address thus burns no code, and the codes together absorb MaxFailedAttempts wrong
// guesses each, from any number of addresses. A right PIN writes nothing: its
// transaction commits without a WAL flush, so the turns are short, and the code is
// used by the statement that creates the request.
func (s *Service) verifyPIN(ctx context.Context, pin, address string, now time.Time) (string, error) {
	macs := s.macs(methodPIN, pin)
	var (
		id      string
		refusal error
	)
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
		if err := q.LockPINAttempts(ctx); err != nil {
			return fmt.Errorf("pairing: wait for the turn of a PIN attempt: %w", err)
		}
		active, err := q.ListActivePairingCodes(ctx, dbsqlc.ListActivePairingCodesParams{Method: methodPIN, Now: now})
		if err != nil {
			return fmt.Errorf("pairing: list the usable PIN codes: %w", err)
		}
		if len(active) == 0 {
			refusal = errCodeRefused()
			return nil
		}
		failures, err := q.ListPINFailures(ctx, dbsqlc.ListPINFailuresParams{SourceAddress: address, Since: active[0].CreatedAt})
		if err != nil {
			return fmt.Errorf("pairing: count the wrong PINs of %s: %w", address, err)
		}
		if len(failures) >= MaxPINFailuresPerAddress {
			s.log.Warn("PIN attempt refused: too many wrong PINs from this address", "source_address", address)
			refusal = errRateLimited("wrong PINs", pinLimitWait(active, failures[MaxPINFailuresPerAddress-1], now))
			return nil
		}
		var found bool
		if id, found = matchMAC(active, macs); found {
			return nil
		}
		refusal = errCodeRefused()
		if err := q.InsertPINFailure(ctx, dbsqlc.InsertPINFailureParams{SourceAddress: address, FailedAt: now}); err != nil {
			return fmt.Errorf("pairing: record a wrong PIN: %w", err)
		}
		// The code to charge is chosen among the codes still usable, locked: one being
		// used meanwhile is waited for and left out.
		usable, err := q.LockActivePINCodes(ctx, now)
		if err != nil {
			return fmt.Errorf("pairing: lock the usable PIN codes: %w", err)
		}
		if len(usable) == 0 {
			return nil // used up meanwhile: nothing is left to guess
		}
		charged := slices.MinFunc(usable, func(a, b dbsqlc.PairingCode) int {
			return cmp.Or(cmp.Compare(a.FailedAttempts, b.FailedAttempts), a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
		})
		return s.countFailure(ctx, q, []string{charged.ID}, now)
	})
	if err != nil {
		return "", err
	}
	return id, refusal
}

// pinLimitWait is how long an address whose MaxPINFailuresPerAddress-th newest counted
// wrong PIN was at cutoff stays refused: until every usable PIN code made by then is
// gone, at the latest when it expires.
func pinLimitWait(active []dbsqlc.PairingCode, cutoff, now time.Time) time.Duration {
	var until time.Time
	for _, c := range active {
		if !c.CreatedAt.After(cutoff) && c.ExpiresAt.After(until) {
			until = c.ExpiresAt
		}
	}
	return until.Sub(now)
}

// countFailure counts a failed attempt, through q, against the usable codes among ids
// and logs the codes it burns.
func (s *Service) countFailure(ctx context.Context, q *dbsqlc.Queries, ids []string, now time.Time) error {
	rows, err := q.CountFailedPairingAttempt(ctx, dbsqlc.CountFailedPairingAttemptParams{
		MaxAttempts: MaxFailedAttempts, Now: now, Ids: ids,
	})
	if err != nil {
		return fmt.Errorf("pairing: count a failed attempt: %w", err)
	}
	for _, r := range rows {
		if r.BurnedAt != nil {
			s.log.Warn("pairing code burned after too many failed attempts", "code_id", r.ID, "attempts", MaxFailedAttempts)
		}
	}
	return nil
}

// listCodes returns a page of codes, newest first, and the token of the next page.
func (s *Service) listCodes(ctx context.Context, pageToken string, limit int, activeOnly bool) ([]dbsqlc.PairingCode, string, error) {
	params := dbsqlc.ListPairingCodesParams{ActiveOnly: activeOnly, Now: s.now(), PageLimit: int32(limit) + 1}
	if pageToken != "" {
		at, id, err := pagetoken.Decode(pageToken)
		if err != nil {
			return nil, "", errInvalid("malformed page token")
		}
		params.AfterCreatedAt, params.AfterID = &at, id
	}
	rows, err := s.opts.Store.Q().ListPairingCodes(ctx, params)
	if err != nil {
		return nil, "", fmt.Errorf("pairing: list codes: %w", err)
	}
	rows, next := pagetoken.Page(rows, limit, func(r dbsqlc.PairingCode) (time.Time, string) { return r.CreatedAt, r.ID })
	return rows, next, nil
}

// deleteCode withdraws a code that was not used, burned or deleted.
func (s *Service) deleteCode(ctx context.Context, id string) (dbsqlc.PairingCode, error) {
	now := s.now()
	q := s.opts.Store.Q()
	row, err := q.DeletePairingCode(ctx, dbsqlc.DeletePairingCodeParams{Now: &now, ID: id})
	if errors.Is(err, store.ErrNotFound) {
		c, gerr := q.GetPairingCode(ctx, id)
		if errors.Is(gerr, store.ErrNotFound) {
			return dbsqlc.PairingCode{}, errNoCode(id)
		}
		if gerr != nil {
			return dbsqlc.PairingCode{}, fmt.Errorf("pairing: get code: %w", gerr)
		}
		return dbsqlc.PairingCode{}, errFailedPrecondition("pairing code %s is %s: only an unused code can be deleted", id, codeState(c, now))
	}
	if err != nil {
		return dbsqlc.PairingCode{}, fmt.Errorf("pairing: delete code: %w", err)
	}
	s.log.Info("pairing code deleted", "code_id", id)
	return row, nil
}

// isULID reports whether s is a ULID in canonical (upper-case) form.
func isULID(s string) bool {
	_, err := ulid.ParseStrict(s)
	return err == nil && strings.ToUpper(s) == s
}
