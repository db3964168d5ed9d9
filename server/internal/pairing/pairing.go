// Package pairing is how nodes join: single-use pairing codes, pairing requests that
// wait for a human decision (one table, one state machine), the issuance of the device
// certificate on approval, and the handlers of PairingService and of NodeService's
// pairing RPCs.
//
// # The protocol
//
//  1. An administrator creates a pairing code (CreatePairingCode, permission
//     nodes.pair): a PIN of 6 to 12 decimal digits (8 by default), or a QR code
//     "<code id>_<secret>" whose secret holds 192 random bits, delivered in a URI
//     palyra://pair?url=<daemon URL>&code=<code>&ca=sha256:<CA fingerprint>. The code is
//     shown once; the database keeps only HMAC-SHA256(MACKey, "pin:"+pin or
//     "qr:"+secret). A code works for 10 minutes unless asked otherwise (30 s to 24 h).
//  2. The node, having pinned the CA (GetServerInfo, not in this package), generates an
//     ECDSA P-256 key and calls StartPairing with the code, a PKCS#10 CSR for that key,
//     its name, platform and agent version, and, when it pairs again, its old device
//     id with a proof that it holds that device's key (claim.go). It gets a request id,
//     a pairing secret (256 random bits, stored as its SHA-256) that authenticates it
//     when it follows its request, and what its device id amounts to. The code is used
//     up.
//  3. The request waits in pending_approval for RequestTTL. An administrator lists it
//     (ListPairingRequests, GetPairingRequest) and sees the device name, platform,
//     agent version, source address, age, the SHA-256 fingerprint of the CSR's public
//     key, which the node also shows, and the device it names with whether that claim
//     is proven; ApprovePairingRequest (permission nodes.approve, optionally with the
//     expected fingerprint, which must then match) signs the CSR's public key and
//     registers the device, or re-pairs the one it named (proven, or by the approver's
//     explicit choice); RejectPairingRequest records a reason. Nobody deciding in time
//     expires the request.
//  4. The node follows the request with WatchPairing (a stream) or GetPairingStatus,
//     proving itself with the pairing secret. The first read after the approval hands
//     it the certificate and the CA and completes the request; later reads by the
//     secret holder return the same certificate.
//
// # The state machine
//
// A pairing request lives in one row of pairing_requests and moves only along
//
//	pending_approval --approve--> approved --node collects--> completed
//	pending_approval --reject---> rejected
//	pending_approval --ttl------> expired
//
// A database trigger refuses every other transition, whoever writes; another announces
// every change with NOTIFY palyra_pairing <request id>, which is how a node watching on
// one replica learns of a decision taken on another. Expiry is applied by Run every 15
// seconds and, lazily, by every read that meets an overdue pending request; each
// expiry is audited as "pairing.expire" by "system". Decisions are final: approving or
// rejecting a request that is not pending is FailedPrecondition.
//
// # Security rules
//
//   - Every failure of a presented code (wrong, unknown, used, expired, burned,
//     deleted, of the other method) gets the same PermissionDenied answer, byte for
//     byte, so that a caller learns nothing about which codes exist.
//   - A wrong QR secret counts a failed attempt against its own code; an unknown QR
//     code id counts nothing; the fifth failed attempt burns a code. A PIN names no
//     code, so a wrong PIN counts against its source address and against the PIN codes
//     together: an address with 3 wrong PINs is refused (ResourceExhausted, before its
//     PIN is compared) while a PIN code usable at its failures is usable, so that no
//     address burns a code alone; and each wrong PIN is charged to the usable PIN code
//     with the fewest failed attempts, burned at 5. The codes thus absorb 5 wrong
//     guesses each on average whatever the number of addresses: with N usable codes of
//     d digits at most 5·N guesses are made, each hitting one with a chance of N/10^d.
//     PIN attempts take turns (an advisory lock; a wrong PIN also locks the usable PIN
//     codes to charge one). MACs are compared in constant time, a PIN with every usable
//     PIN code.
//   - Starts are rate limited per remote address (10 a minute, burst 10), before the
//     code is looked at: a guesser is throttled whatever it sends. So are the status
//     calls and watches of requests (60 a minute, burst 30, together), before the
//     request id and pairing secret are looked at.
//   - A code is used by the statement that creates the request, with a conditional
//     update: of concurrent starts with one code exactly one wins. The CSR
//     is checked before the code is used, so that a broken CSR does not waste a code.
//   - Only ECDSA P-256 CSRs with a valid signature are accepted. The certificate takes
//     nothing from the CSR but its public key: its subject, the URI SAN
//     palyra://device/<id> and the only extended key usage, clientAuth, come from the
//     issuance policy (identity.DeviceIdentity).
//   - No RPC, message or log line carries a private key; no log line carries a code, a
//     pairing secret or a CSR.
//   - Naming a device proves nothing: a request re-pairs an existing device (whose
//     other certificates are then revoked) only when its node proved that it holds the
//     key of the device's newest certificate, or when the approver chose to replace
//     the device (replace_device_id) after seeing the request flagged; otherwise its
//     approval is refused until the approver chooses (claim.go). A revoked device pairs
//     again under its id only when the approver also passes reinstate_revoked_device.
package pairing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/ratelimit"
	"github.com/palyra/palyra/server/internal/store"
)

// Defaults and limits.
const (
	// Channel is the notification channel on which the database announces every state
	// change of a pairing request; the payload is the request id.
	Channel = "palyra_pairing"
	// DefaultPINDigits is the length of PIN codes when Options.PINDigits is zero.
	DefaultPINDigits = 8
	// MinPINDigits and MaxPINDigits bound the length of a PIN.
	MinPINDigits, MaxPINDigits = 6, 12
	// DefaultCodeTTL is how long a code works when its creator does not say.
	DefaultCodeTTL = 10 * time.Minute
	// MinCodeTTL and MaxCodeTTL bound the lifetime of a code.
	MinCodeTTL, MaxCodeTTL = 30 * time.Second, 24 * time.Hour
	// DefaultRequestTTL is how long a request waits for a decision when
	// Options.RequestTTL is zero.
	DefaultRequestTTL = 15 * time.Minute
	// DefaultDeviceCertLifetime is the validity of device certificates when
	// Options.DeviceCertLifetime is zero.
	DefaultDeviceCertLifetime = 24 * time.Hour
	// MaxFailedAttempts is the number of failed attempts that burns a code.
	MaxFailedAttempts = 5
	// MaxPINFailuresPerAddress is the number of wrong PINs after which an address is
	// refused PIN attempts while a PIN code usable at its failures is usable.
	MaxPINFailuresPerAddress = 3
	// StartsPerMinute and StartBurst rate limit StartPairing per remote address.
	StartsPerMinute, StartBurst = 10, 10
	// FollowsPerMinute and FollowBurst rate limit GetPairingStatus and WatchPairing
	// together per remote address: a node that polls every 2 s stays well within.
	FollowsPerMinute, FollowBurst = 60, 30

	// macKeySize is the length of Options.MACKey.
	macKeySize = 32
	// sweepInterval is how often Run expires overdue requests.
	sweepInterval = 15 * time.Second
	// watchPoll is how often a watch re-reads its request when no notification came.
	watchPoll = 5 * time.Second
	// watchGrace is how long a watch outlives the expiry of its request.
	watchGrace = time.Minute
)

// Options are the Service's dependencies and settings.
type Options struct {
	// Store is the database.
	Store *store.Store
	// Authority signs device certificates.
	Authority *identity.Authority
	// MACKey is the 32-byte key under which pairing codes are stored as HMAC-SHA256;
	// the daemon derives it as identity.KeyEncryptionKey.DeriveKey("pairing-code-mac")
	// (HKDF info "palyra/v1/pairing-code-mac") from the primary master key, so every
	// replica with the same primary has the same. New codes are stored under it.
	MACKey []byte
	// OlderMACKeys are the same key derived from the older master keys of the ring:
	// during a master key rotation a code stored under one of them (by a replica whose
	// primary it still is, or before the rotation) is still accepted.
	OlderMACKeys [][]byte
	// Notify listens on Channel ("palyra_pairing"); it must be running for watches to
	// learn of decisions at once. Nil: watches re-read their request every 5 s only.
	Notify *notify.Listener
	// Audit records the decisions that no RPC makes: expiries.
	Audit *audit.Log
	// ReplicaID is recorded as the issuer of each certificate.
	ReplicaID string
	// PublicURL is the http(s) URL nodes reach the daemon at, put in QR pairing URIs.
	PublicURL string
	// PINDigits returns the length of PIN codes whose creator does not ask for another,
	// 6 to 12, read when a code is made; nil means 8.
	PINDigits func() int
	// RequestTTL returns how long a pairing request waits for a decision, read when a
	// request is made; nil means 15 minutes.
	RequestTTL func() time.Duration
	// DeviceCertLifetime is the validity of device certificates; zero means 24 hours.
	DeviceCertLifetime time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives what happens, never a code, a secret or a CSR; nil discards it.
	Logger *slog.Logger
}

// Service is node pairing: it holds the logic that both handlers call, the sweeper that
// expires requests, and the watches of WatchPairing and WatchPairingRequests. It is safe for concurrent use.
type Service struct {
	opts    Options
	now     func() time.Time
	log     *slog.Logger
	starts  *ratelimit.Keyed     // StartPairing calls per remote host
	follows *ratelimit.Keyed     // GetPairingStatus and WatchPairing calls per remote host
	sub     *notify.Subscription // nil without Options.Notify
	poll    time.Duration        // how often a watch re-reads without a notification

	stopping     chan struct{} // closed by Shutdown
	stoppingOnce sync.Once

	// changes hands the changes of requests to the watches of WatchPairing and
	// WatchPairingRequests.
	changes *notify.Fanout
}

// changeBuffer is how many changes a watch of every request holds before it reports
// them as missed.
const changeBuffer = 64

// New checks opts and returns the Service. It subscribes to Channel right away so that
// no notification is missed between New and Run.
func New(opts Options) (*Service, error) {
	var problems []error
	if opts.Store == nil {
		problems = append(problems, errors.New("a store is required"))
	}
	if opts.Authority == nil {
		problems = append(problems, errors.New("an authority is required"))
	}
	if opts.Audit == nil {
		problems = append(problems, errors.New("an audit log is required"))
	}
	for _, k := range append([][]byte{opts.MACKey}, opts.OlderMACKeys...) {
		if len(k) != macKeySize {
			problems = append(problems, fmt.Errorf("the MAC key must be %d bytes, not %d", macKeySize, len(k)))
		}
	}
	if u, err := url.Parse(opts.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		problems = append(problems, fmt.Errorf("the public URL %q is not an absolute http(s) URL", opts.PublicURL))
	}
	if opts.PINDigits == nil {
		opts.PINDigits = func() int { return DefaultPINDigits }
	}
	if opts.RequestTTL == nil {
		opts.RequestTTL = func() time.Duration { return DefaultRequestTTL }
	}
	if opts.DeviceCertLifetime == 0 {
		opts.DeviceCertLifetime = DefaultDeviceCertLifetime
	}
	if opts.DeviceCertLifetime < 0 {
		problems = append(problems, errors.New("the certificate lifetime must be positive"))
	}
	if err := errors.Join(problems...); err != nil {
		return nil, fmt.Errorf("pairing: %w", err)
	}
	opts.MACKey = append([]byte(nil), opts.MACKey...)
	opts.OlderMACKeys = slices.Clone(opts.OlderMACKeys)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		opts:     opts,
		now:      func() time.Time { return opts.Now().UTC().Truncate(time.Microsecond) },
		log:      log,
		starts:   ratelimit.NewKeyed(ratelimit.Options{Burst: StartBurst, PerMinute: StartsPerMinute, Now: opts.Now}),
		follows:  ratelimit.NewKeyed(ratelimit.Options{Burst: FollowBurst, PerMinute: FollowsPerMinute, Now: opts.Now}),
		poll:     watchPoll,
		changes:  notify.NewFanout(),
		stopping: make(chan struct{}),
	}
	if opts.Notify != nil {
		sub, err := opts.Notify.Subscribe(Channel)
		if err != nil {
			return nil, fmt.Errorf("pairing: %w", err)
		}
		s.sub = sub
	}
	return s, nil
}

// Run expires pending requests whose time ran out (at start and every 15 s), auditing
// each expiry, forgets old wrong PINs, and dispatches pairing notifications to watchers, until ctx is done. Run
// is meant to have its own goroutine, and to be started once.
func (s *Service) Run(ctx context.Context) {
	notify.Relay(ctx, s.sub, s.changes, sweepInterval, s.sweep)
}

// sweep expires the overdue requests and forgets the wrong PINs that predate every
// usable code (older than the longest code lifetime), logging a failure (the next
// sweep retries).
func (s *Service) sweep(ctx context.Context) {
	if err := s.expireDue(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("expiring pairing requests failed", "err", err)
	}
	if _, err := s.opts.Store.Q().DeletePINFailures(ctx, s.now().Add(-MaxCodeTTL)); err != nil && ctx.Err() == nil {
		s.log.Error("forgetting old wrong PINs failed", "err", err)
	}
}

// expireDue moves every pending request whose time ran out to expired, and audits each
// expiry: the events commit with the expiries (audit outbox rows) and are appended
// after the commit.
func (s *Service) expireDue(ctx context.Context) error {
	now := s.now()
	var ids []string
	var staged []audit.Record
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		if ids, err = tx.Q().ExpirePairingRequests(ctx, now); err != nil {
			return err
		}
		events := make([]audit.Event, len(ids))
		for i, id := range ids {
			events[i] = audit.Event{Time: now, Principal: "system", Procedure: "pairing.expire",
				Target: "pairing_request:" + id, Outcome: audit.Success, Code: "ok"}
		}
		staged, err = s.opts.Audit.Stage(ctx, tx, events...)
		return err
	})
	if err != nil {
		return fmt.Errorf("pairing: expire requests: %w", err)
	}
	for _, id := range ids {
		s.log.Info("pairing request expired", "request_id", id)
		s.changes.Wake(id)
	}
	if err := s.opts.Audit.Publish(ctx, staged); err != nil {
		return fmt.Errorf("pairing: audit the expiries: %w", err)
	}
	return nil
}

// Shutdown ends every watch of every request (WatchPairingRequests) on this replica and
// refuses new ones: they do not end by themselves, and the HTTP server's shutdown waits
// for them. Clients watch again, on any replica.
func (s *Service) Shutdown() {
	s.stoppingOnce.Do(func() { close(s.stopping) })
}

// PairingHandler serves PairingService.
func (s *Service) PairingHandler() *PairingHandler { return &PairingHandler{s: s} }

// NodeHandler serves NodeService's pairing RPCs (StartPairing, GetPairingStatus,
// WatchPairing). The daemon composes it with the other parts of NodeService; it does
// not implement the whole interface.
func (s *Service) NodeHandler() *NodeHandler { return &NodeHandler{s: s} }
