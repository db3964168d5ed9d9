package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/cli/internal/client"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/possession"
	"github.com/palyra/palyra/internal/retry"
)

// Code is the pairing code a node presents: a PIN or the code of a QR pairing URI.
type Code struct {
	// PIN is a PIN code, 6 to 12 digits.
	PIN string
	// QR is the code parameter of a palyra://pair URI.
	QR string
}

// PairOptions say how and with whom a node pairs.
type PairOptions struct {
	// Dir is the node's state directory.
	Dir *StateDir
	// URL is palyrad's base URL. When the node resumes a pending request it may be
	// empty; when given it must name the server of that request.
	URL string
	// CAFingerprint pins palyrad's CA ("sha256:<hex>"): the node pairs with no daemon
	// whose CA it has not pinned. When resuming it may be empty; when given it must be
	// the pin of that request.
	CAFingerprint string
	// Code is the pairing code; unused when resuming.
	Code Code
	// DeviceName, Platform and AgentVersion describe the node to the approver.
	DeviceName, Platform, AgentVersion string
	// Force pairs again although the node is paired or waits on a request: it makes a
	// new key and, once the new request is made, puts the current key and certificate
	// aside (StateDir.RetireIdentity) to prove the device again until one is approved.
	Force bool
	// Events receives progress, from the goroutine that runs Pair; nil drops it.
	Events func(Event)
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// retry is how the node waits; zero means defaultRetry. Tests shorten it.
	retry retryPolicy
}

// PairResult describes a node that has paired.
type PairResult struct {
	// DeviceID is the node's device id.
	DeviceID string `json:"device_id"`
	// DeviceName is the name it paired with.
	DeviceName string `json:"device_name"`
	// RequestID is the approved pairing request.
	RequestID string `json:"request_id"`
	// URL is palyrad's base URL.
	URL string `json:"url"`
	// KeyFingerprint is the SHA-256 of the node's public key.
	KeyFingerprint string `json:"key_fingerprint"`
	// CertificateFingerprint is the SHA-256 of the device certificate's DER.
	CertificateFingerprint string `json:"certificate_fingerprint"`
	// CAFingerprint is the SHA-256 of palyrad's CA certificate.
	CAFingerprint string `json:"ca_fingerprint"`
	// CertificateExpireTime is when the device certificate expires.
	CertificateExpireTime time.Time `json:"certificate_expire_time"`
	// StateDir is where the key, the certificates and node-host.json are.
	StateDir string `json:"state_dir"`
}

// Event is progress that Pair reports: one of Waiting, StateChanged, Retrying and
// Polling.
type Event interface{ event() }

// Waiting reports that the node waits for an administrator's decision.
type Waiting struct {
	// RequestID is the pairing request to approve.
	RequestID string
	// KeyFingerprint is this node's public-key fingerprint: what the approver compares.
	KeyFingerprint string
	// ServerKeyFingerprint is the fingerprint palyrad computed from the CSR; it differs
	// from KeyFingerprint only if something is wrong. Empty when resuming.
	ServerKeyFingerprint string
	// ExpireTime is when the request expires if no one decides; zero if unknown.
	ExpireTime time.Time
	// URL is palyrad's base URL.
	URL string
	// Resumed is true when the request was made by an earlier run.
	Resumed bool
	// PreviousDeviceID is the device the request names, when the node pairs again.
	PreviousDeviceID string
	// DeviceClaim is what palyrad found that claim to amount to; unspecified when
	// resuming.
	DeviceClaim nodev1.DeviceClaim
}

// StateChanged reports a new state of the request that is not a decision yet.
type StateChanged struct {
	// State is the request's state.
	State nodev1.PairingState
}

// Retrying reports a lost connection and the wait before the next attempt.
type Retrying struct {
	// Err is what went wrong.
	Err error
	// Delay is the wait.
	Delay time.Duration
}

// Polling reports that the node stopped watching and polls instead.
type Polling struct {
	// Interval is the time between polls.
	Interval time.Duration
}

func (Waiting) event()      {}
func (StateChanged) event() {}
func (Retrying) event()     {}
func (Polling) event()      {}

// DecisionError reports a request that ended without a certificate: rejected or expired.
type DecisionError struct {
	// RequestID is the request.
	RequestID string
	// State is PAIRING_STATE_REJECTED or PAIRING_STATE_EXPIRED.
	State nodev1.PairingState
	// Reason is what palyrad said: the administrator's reason, or why it expired.
	Reason string
}

// Error implements error.
func (e *DecisionError) Error() string {
	reason := e.Reason
	if reason == "" {
		reason = "no reason given"
	}
	if e.State == nodev1.PairingState_PAIRING_STATE_EXPIRED {
		return fmt.Sprintf("pairing request expired: %s (request %s); ask for a new pairing code", reason, e.RequestID)
	}
	return fmt.Sprintf("pairing rejected: %s (request %s)", reason, e.RequestID)
}

// AlreadyPairedError refuses to pair a node that is paired, without Force.
type AlreadyPairedError struct {
	// DeviceID is the node's device id.
	DeviceID string
	// Dir is the state directory.
	Dir string
}

// Error implements error.
func (e *AlreadyPairedError) Error() string {
	return fmt.Sprintf("this node is already paired as device %s (state in %s); pass --force to pair again "+
		"with a new key, which gives up the current certificate", orDash(e.DeviceID), e.Dir)
}

// TrustError reports a daemon whose CA is not the pinned one. Nothing was sent to it.
type TrustError struct {
	// URL is the daemon.
	URL string
	// Want is the pinned fingerprint; Got the one of the CA the daemon returned.
	Want, Got string
}

// Error implements error.
func (e *TrustError) Error() string {
	return fmt.Sprintf("%s returned the CA %s, not the pinned %s; check the fingerprint the administrator gave you "+
		"(palyra pairing codes create prints it). Nothing was sent", e.URL, e.Got, e.Want)
}

// InterruptedError reports that the node stopped waiting on a request because its
// context ended; the request stays pending and a new Pair resumes it.
type InterruptedError struct {
	// RequestID is the pending request.
	RequestID string
	err       error
}

// Error implements error.
func (e *InterruptedError) Error() string {
	return fmt.Sprintf("stopped waiting for pairing request %s: %v", e.RequestID, e.err)
}

// Unwrap returns the context's error.
func (e *InterruptedError) Unwrap() error { return e.err }

// Pair pairs the node with palyrad, or resumes the pairing request that an earlier run
// left pending, and waits for the decision. It returns the paired node, a
// *DecisionError when the request was rejected or expired, an *AlreadyPairedError, a
// *TrustError, or an *InterruptedError when ctx ends while it waits.
func Pair(ctx context.Context, o PairOptions) (*PairResult, error) {
	p := &pairer{PairOptions: o}
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Events == nil {
		p.Events = func(Event) {}
	}
	if p.retry == (retryPolicy{}) {
		p.retry = defaultRetry
	}
	return p.pair(ctx)
}

// pairer is one run of Pair.
type pairer struct {
	PairOptions
	host    *Host
	pending *Pending
	key     *ecdsa.PrivateKey
	keyFP   string
	ca      *x509.Certificate // the pinned CA, once checked
	nodes   nodev1connect.NodeServiceClient
}

func (p *pairer) pair(ctx context.Context) (*PairResult, error) {
	var err error
	if p.host, err = p.Dir.Host(); err != nil {
		return nil, err
	}
	paired, err := p.Dir.Paired()
	if err != nil {
		return nil, err
	}
	if paired && !p.Force {
		return nil, &AlreadyPairedError{DeviceID: p.host.DeviceID, Dir: p.Dir.Path()}
	}
	if !p.Force {
		if p.pending, err = p.Dir.Pending(); err != nil {
			return nil, err
		}
	}
	resume := p.pending != nil
	if resume {
		if err := p.resumeSettings(); err != nil {
			return nil, err
		}
	} else if p.URL == "" || p.CAFingerprint == "" || (p.Code.PIN == "") == (p.Code.QR == "") {
		return nil, errors.New("pairing needs palyrad's URL, its CA fingerprint and one pairing code")
	}
	if err := p.trust(ctx); err != nil {
		return nil, err
	}
	if resume {
		if p.key, err = p.Dir.Key(); err != nil {
			return nil, err
		}
		if p.key == nil {
			return nil, fmt.Errorf("%s records pairing request %s but %s is missing; pass --force to start over",
				p.Dir.File(PendingFile), p.pending.RequestID, p.Dir.File(KeyFile))
		}
		if p.keyFP, err = KeyFingerprint(p.key.Public()); err != nil {
			return nil, err
		}
		p.Events(Waiting{RequestID: p.pending.RequestID, KeyFingerprint: p.keyFP, ExpireTime: p.pending.ExpireTime, URL: p.URL, Resumed: true})
	} else if err := p.start(ctx, paired); err != nil {
		return nil, err
	}
	st, err := p.follow(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, &InterruptedError{RequestID: p.pending.RequestID, err: ctx.Err()}
		}
		return nil, err
	}
	return p.finish(st)
}

// resumeSettings takes the server and pin of the pending request, refusing flags that
// name another.
func (p *pairer) resumeSettings() error {
	h, id := p.host, p.pending.RequestID
	if h.URL == "" || !client.ValidFingerprint(h.CAFingerprint) {
		return fmt.Errorf("%s records pairing request %s but %s lacks its server or CA fingerprint; pass --force to start over",
			p.Dir.File(PendingFile), id, p.Dir.File(HostFile))
	}
	if p.URL != "" && !client.SameServer(p.URL, h.URL) {
		return fmt.Errorf("pairing request %s is pending with %s, not %s: run again without --url to resume it, "+
			"or with --force to start over", id, h.URL, p.URL)
	}
	if p.CAFingerprint != "" && p.CAFingerprint != h.CAFingerprint {
		return fmt.Errorf("pairing request %s is pending with a daemon whose CA is %s, not %s: run again without "+
			"--ca-fingerprint or --ca-file to resume it, or with --force to start over", id, h.CAFingerprint, p.CAFingerprint)
	}
	p.URL, p.CAFingerprint = h.URL, h.CAFingerprint
	return nil
}

// trust connects pinned to CAFingerprint, checks the CA that GetServerInfo returns
// against it, and makes the client that trusts that CA alone.
func (p *pairer) trust(ctx context.Context) error {
	pinned, err := client.New(client.Options{URL: p.URL, CAFingerprint: p.CAFingerprint})
	if err != nil {
		return err
	}
	res, err := pinned.Node.GetServerInfo(ctx, connect.NewRequest(&nodev1.GetServerInfoRequest{}))
	if err != nil {
		return err
	}
	ca, err := parseCertificatePEM(res.Msg.GetCaCertificatePem())
	if err != nil {
		return fmt.Errorf("%s returned no usable CA certificate: %w", pinned.URL, err)
	}
	if got := client.Fingerprint(ca); got != p.CAFingerprint || !ca.IsCA {
		return &TrustError{URL: pinned.URL, Want: p.CAFingerprint, Got: got}
	}
	c, err := client.New(client.Options{URL: p.URL, CA: ca})
	if err != nil {
		return err
	}
	p.ca, p.nodes, p.URL = ca, c.Node, c.URL
	return nil
}

// start makes a new pairing request and records it, with the key, once palyrad has
// accepted it: a refused code leaves the state as it was.
func (p *pairer) start(ctx context.Context, paired bool) error {
	var err error
	newKey := p.Force
	if !newKey {
		if p.key, err = p.Dir.Key(); err != nil {
			return err
		}
		newKey = p.key == nil
	}
	if newKey {
		if p.key, err = GenerateKey(); err != nil {
			return err
		}
	}
	if p.keyFP, err = KeyFingerprint(p.key.Public()); err != nil {
		return err
	}
	csr, err := NewCSR(p.key, p.DeviceName)
	if err != nil {
		return err
	}
	// A node that pairs again with the same daemon says which device it was.
	var previous string
	if client.SameServer(p.host.URL, p.URL) && p.host.CAFingerprint == p.CAFingerprint {
		previous = p.host.DeviceID
		if previous == "" {
			previous = p.host.PreviousDeviceID
		}
	}
	req := &nodev1.StartPairingRequest{
		Csr: csr, DeviceName: p.DeviceName, Platform: p.Platform, AgentVersion: p.AgentVersion, DeviceId: previous,
	}
	if previous != "" {
		if req.DevicePossession, err = p.possessionProof(previous, csr); err != nil {
			return err
		}
	}
	if p.Code.PIN != "" {
		req.Code = &nodev1.StartPairingRequest_Pin{Pin: p.Code.PIN}
	} else {
		req.Code = &nodev1.StartPairingRequest_QrCode{QrCode: p.Code.QR}
	}
	res, err := p.nodes.StartPairing(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	if res.Msg.GetRequestId() == "" || res.Msg.GetPairingSecret() == "" {
		return errors.New("palyrad accepted the pairing code but returned no request id or secret")
	}
	p.pending = &Pending{RequestID: res.Msg.GetRequestId(), Secret: res.Msg.GetPairingSecret()}
	if t := res.Msg.GetExpireTime(); t != nil {
		p.pending.ExpireTime = t.AsTime()
	}
	if paired {
		// Put aside before the new key replaces it: it proves the device until approved.
		if err := p.Dir.RetireIdentity(); err != nil {
			return err
		}
	}
	if newKey {
		if err := p.Dir.SaveKey(p.key); err != nil {
			return err
		}
	}
	if err := p.Dir.SavePending(p.pending); err != nil {
		return err
	}
	p.host = &Host{
		URL: p.URL, CAFingerprint: p.CAFingerprint, DeviceName: p.DeviceName, PreviousDeviceID: previous,
		KeyFingerprint: p.keyFP, RequestID: p.pending.RequestID,
	}
	if err := p.Dir.SaveHost(p.host); err != nil {
		return err
	}
	p.Events(Waiting{
		RequestID: p.pending.RequestID, KeyFingerprint: p.keyFP, ServerKeyFingerprint: res.Msg.GetPublicKeyFingerprint(),
		ExpireTime: p.pending.ExpireTime, URL: p.URL, PreviousDeviceID: previous, DeviceClaim: res.Msg.GetDeviceClaim(),
	})
	return nil
}

// possessionProof signs a request to pair again as device device, with csr, by the
// key of that device's certificate, which palyrad checks against the certificate it
// issued; nil when the node no longer has them (its key was lost, say): the approver
// then decides whether this node may replace the device.
func (p *pairer) possessionProof(device string, csr []byte) (*nodev1.DevicePossession, error) {
	key, cert, err := p.Dir.Identity()
	if err != nil || key == nil {
		return nil, err
	}
	if id, err := deviceID(cert); err != nil || id != device {
		return nil, nil
	}
	sig, err := possession.Sign(key, device, csr)
	if err != nil {
		return nil, err
	}
	return &nodev1.DevicePossession{Certificate: cert.Raw, Signature: sig}, nil
}

// finish stores what a decided request gave: the certificate of an approved one, or
// the end of a rejected or expired one.
func (p *pairer) finish(st *nodev1.PairingStatus) (*PairResult, error) {
	id := p.pending.RequestID
	switch st.GetState() {
	case nodev1.PairingState_PAIRING_STATE_REJECTED, nodev1.PairingState_PAIRING_STATE_EXPIRED:
		if err := p.forgetRequest(); err != nil {
			return nil, err
		}
		return nil, &DecisionError{RequestID: id, State: st.GetState(), Reason: st.GetReason()}
	}
	if st.GetCertificatePem() == "" {
		return nil, fmt.Errorf("pairing request %s is %s but palyrad sent no certificate; pass --force to pair again",
			id, strings.ToLower(strings.TrimPrefix(st.GetState().String(), "PAIRING_STATE_")))
	}
	issued, err := CheckIssued(st.GetCertificatePem(), st.GetCaCertificatePem(), p.key, p.ca, st.GetDeviceId())
	if err != nil {
		return nil, fmt.Errorf("pairing request %s was approved but the certificate is unusable: %w", id, err)
	}
	if err := p.Dir.SaveCertificates(issued.Certificate, p.ca); err != nil {
		return nil, err
	}
	h := p.host
	h.URL, h.CAFingerprint, h.KeyFingerprint = p.URL, p.CAFingerprint, p.keyFP
	h.DeviceID, h.PreviousDeviceID, h.RequestID = issued.DeviceID, "", ""
	h.CertificateFingerprint = client.Fingerprint(issued.Certificate)
	h.CertificateExpireTime = issued.Certificate.NotAfter.UTC()
	h.PairedAt = p.Now().UTC().Truncate(time.Second)
	if err := p.Dir.SaveHost(h); err != nil {
		return nil, err
	}
	if err := p.Dir.RemovePending(); err != nil {
		return nil, err
	}
	if err := p.Dir.ForgetIdentity(); err != nil {
		return nil, err
	}
	return &PairResult{
		DeviceID: h.DeviceID, DeviceName: h.DeviceName, RequestID: id, URL: h.URL, KeyFingerprint: h.KeyFingerprint,
		CertificateFingerprint: h.CertificateFingerprint, CAFingerprint: h.CAFingerprint,
		CertificateExpireTime: h.CertificateExpireTime, StateDir: p.Dir.Path(),
	}, nil
}

// forgetRequest removes a decided request and its secret.
func (p *pairer) forgetRequest() error {
	if err := p.Dir.RemovePending(); err != nil {
		return err
	}
	p.host.RequestID = ""
	return p.Dir.SaveHost(p.host)
}

// Issued is a device certificate that palyrad issued to this node, checked.
type Issued struct {
	// Certificate is the device certificate.
	Certificate *x509.Certificate
	// DeviceID is the device id it names.
	DeviceID string
}

// CheckIssued parses and checks a device certificate issued for key: it must certify
// key's public key, verify against ca for client authentication, come with ca (caPEM,
// when given, must be that CA), and name exactly one device in a palyra://device/<id>
// URI SAN, equal to wantDeviceID when that is not empty. Validity is checked as of the
// certificate's start, not the node's clock: a node whose clock is off still stores
// what it was issued (palyrad judges validity by its own clock).
func CheckIssued(certPEM, caPEM string, key *ecdsa.PrivateKey, ca *x509.Certificate, wantDeviceID string) (*Issued, error) {
	cert, err := parseCertificatePEM(certPEM)
	if err != nil {
		return nil, err
	}
	if caPEM != "" {
		sent, err := parseCertificatePEM(caPEM)
		if err != nil {
			return nil, fmt.Errorf("the CA sent with it: %w", err)
		}
		if !sent.Equal(ca) {
			return nil, fmt.Errorf("it comes with the CA %s, not the pinned %s", client.Fingerprint(sent), client.Fingerprint(ca))
		}
	}
	if !certifies(cert, key) {
		return nil, errors.New("it does not certify this node's key")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: cert.NotBefore, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("it does not verify against the pinned CA: %w", err)
	}
	id, err := deviceID(cert)
	if err != nil {
		return nil, err
	}
	if wantDeviceID != "" && id != wantDeviceID {
		return nil, fmt.Errorf("it names device %s, but palyrad said %s", id, wantDeviceID)
	}
	return &Issued{Certificate: cert, DeviceID: id}, nil
}

// deviceID returns the device id of a device certificate, from its only
// palyra://device/<id> URI SAN.
func deviceID(c *x509.Certificate) (string, error) {
	var found []*url.URL
	for _, u := range c.URIs {
		if u.Scheme == "palyra" && u.Host == "device" {
			found = append(found, u)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("it names %d devices (palyra://device/<id>), not one", len(found))
	}
	id := strings.TrimPrefix(found[0].Path, "/")
	if !ulidPattern.MatchString(id) {
		return "", fmt.Errorf("its device id %q is malformed", id)
	}
	return id, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// retryPolicy is how a node waits for a decision.
type retryPolicy struct {
	// initial and max bound the backoff between reconnections (retry.Backoff: full
	// jitter, starting over once a stream brought a status).
	initial, max time.Duration
	// streamFailures is how many consecutive failed streams make the node poll.
	streamFailures int
	// poll is the time between polls.
	poll time.Duration
}

var defaultRetry = retryPolicy{initial: 500 * time.Millisecond, max: 30 * time.Second, streamFailures: 5, poll: 2 * time.Second}

// follow waits for the decision on the pending request: it watches the request,
// reconnecting with backoff when the stream breaks, and polls GetPairingStatus every
// retry.poll once retry.streamFailures streams in a row failed (or when palyrad has no
// WatchPairing). A transient failure (retry.Transient) or a rate limit (waited out for
// at least its Retry-After) is tried again; any other refusal ends the wait. It
// returns the first final status: approved with a certificate, completed, rejected or
// expired.
func (p *pairer) follow(ctx context.Context) (*nodev1.PairingStatus, error) {
	var last nodev1.PairingState
	seen := func(st *nodev1.PairingStatus) bool {
		if final(st) {
			return true
		}
		if st.GetState() != last {
			last = st.GetState()
			p.Events(StateChanged{State: last})
		}
		return false
	}
	b := &retry.Backoff{Initial: p.retry.initial, Max: p.retry.max}
	failures := 0
	for failures < p.retry.streamFailures {
		st, received, err := p.watch(ctx, seen)
		throttle, throttled := retry.Throttled(err)
		switch {
		case st != nil:
			return st, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case connect.CodeOf(err) == connect.CodeUnimplemented:
			failures = p.retry.streamFailures
			continue
		case err != nil && !retry.Transient(err) && !throttled:
			return nil, p.lost(err)
		case received:
			b.Reset()
			failures = 0
		}
		failures++
		if err == nil {
			err = errors.New("palyrad ended the stream before a decision")
		}
		wait := max(b.Next(), throttle)
		p.Events(Retrying{Err: err, Delay: wait})
		if err := retry.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
	p.Events(Polling{Interval: p.retry.poll})
	for {
		wait := p.retry.poll
		res, err := p.nodes.GetPairingStatus(ctx, connect.NewRequest(&nodev1.GetPairingStatusRequest{
			RequestId: p.pending.RequestID, PairingSecret: p.pending.Secret,
		}))
		switch {
		case err == nil:
			if seen(res.Msg.GetStatus()) {
				return res.Msg.GetStatus(), nil
			}
		case ctx.Err() != nil:
			return nil, ctx.Err()
		default:
			throttle, throttled := retry.Throttled(err)
			if !retry.Transient(err) && !throttled {
				return nil, p.lost(err)
			}
			wait = max(wait, throttle)
			p.Events(Retrying{Err: err, Delay: wait})
		}
		if err := retry.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// watch follows one WatchPairing stream until a final status (returned), its end or an
// error. received says whether any status arrived.
func (p *pairer) watch(ctx context.Context, seen func(*nodev1.PairingStatus) bool) (final *nodev1.PairingStatus, received bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := p.nodes.WatchPairing(ctx, connect.NewRequest(&nodev1.WatchPairingRequest{
		RequestId: p.pending.RequestID, PairingSecret: p.pending.Secret,
	}))
	if err != nil {
		return nil, false, err
	}
	defer stream.Close()
	for stream.Receive() {
		received = true
		if st := stream.Msg().GetStatus(); seen(st) {
			return st, true, nil
		}
	}
	return nil, received, stream.Err()
}

// lost explains a refusal to report on the pending request.
func (p *pairer) lost(err error) error {
	return fmt.Errorf("palyrad no longer reports on pairing request %s (%w); pass --force to start over", p.pending.RequestID, err)
}

// final reports whether a status ends the wait.
func final(st *nodev1.PairingStatus) bool {
	switch st.GetState() {
	case nodev1.PairingState_PAIRING_STATE_APPROVED:
		return st.GetCertificatePem() != ""
	case nodev1.PairingState_PAIRING_STATE_COMPLETED, nodev1.PairingState_PAIRING_STATE_REJECTED, nodev1.PairingState_PAIRING_STATE_EXPIRED:
		return true
	}
	return false
}
