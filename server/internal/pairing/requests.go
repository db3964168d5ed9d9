package pairing

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/devices"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/pagetoken"
	"github.com/palyra/palyra/server/internal/store"
)

// States of pairing requests, as stored (the pairing_requests_state constraint).
const (
	statePending   = "pending_approval"
	stateApproved  = "approved"
	stateCompleted = "completed"
	stateRejected  = "rejected"
	stateExpired   = "expired"
)

// pairingSecretBytes is the entropy of a pairing secret: 256 bits.
const pairingSecretBytes = 32

// terminal reports whether a request in state will never change again (as far as its
// node is concerned: an approved request still becomes completed).
func terminal(state string) bool {
	return state == stateCompleted || state == stateRejected || state == stateExpired
}

// overdue reports whether r is pending and its time ran out at now.
func overdue(r dbsqlc.PairingRequest, now time.Time) bool {
	return r.State == statePending && !r.ExpiresAt.After(now)
}

// secretHash is what the database keeps of a pairing secret.
func secretHash(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// startParams are what a node sends to start pairing, with the address it came from.
type startParams struct {
	code             presentedCode
	csr              []byte
	deviceName       string
	platform         string
	agentVersion     string
	previousDeviceID string
	proof            *proof // of holding previousDeviceID's key; nil without
	sourceAddress    string
}

// started is a new request and its pairing secret, shown once.
type started struct {
	row    dbsqlc.PairingRequest
	secret string
}

// start checks the CSR, then the code, and creates the request, using the code in the
// same transaction. A broken CSR is refused before the code is looked at, so that it
// does not waste a good code; every failure of the code is errCodeRefused.
func (s *Service) start(ctx context.Context, p startParams) (*started, error) {
	_, fingerprint, err := identity.ParseCSR(p.csr)
	if err != nil {
		return nil, errInvalid("csr: %v", err)
	}
	if p.deviceName == "" {
		return nil, errInvalid("device_name is required")
	}
	if p.previousDeviceID != "" && !isULID(p.previousDeviceID) {
		return nil, errInvalid("device_id %q is not a device id", p.previousDeviceID)
	}
	if p.proof != nil && p.previousDeviceID == "" {
		return nil, errInvalid("device_possession proves a device_id: name the device")
	}
	codeID, err := s.verifyCode(ctx, p.code, p.sourceAddress)
	if err != nil {
		return nil, err
	}
	return s.createRequest(ctx, codeID, fingerprint, p)
}

// judgeStart judges the device claim of a start: the proof checked, then the claim.
func (s *Service) judgeStart(ctx context.Context, p startParams, now time.Time) (string, *proven, error) {
	if p.previousDeviceID == "" {
		return claimNew, nil, nil
	}
	var pr *proven
	refused := "the node sent no proof"
	if p.proof != nil {
		var err error
		if pr, refused, err = s.checkProof(ctx, p.previousDeviceID, p.csr, *p.proof); err != nil {
			return "", nil, err
		}
	}
	claim, _, why, err := s.judgeClaim(ctx, s.opts.Store, &p.previousDeviceID, pr, now)
	if err != nil {
		return "", nil, err
	}
	if claim == claimUnproven && pr == nil {
		why = refused
	}
	if claim == claimUnproven || claim == claimRevoked {
		s.log.Info("pairing request names a device it did not prove to be: the approver must choose",
			"device_id", p.previousDeviceID, "claim", claim, "why", why, "source_address", p.sourceAddress)
	}
	if claim != claimProven {
		pr = nil
	}
	return claim, pr, nil
}

// createRequest judges the device claim, then uses the code and inserts the request in
// one statement: of concurrent starts with one code, exactly one finds the code usable.
func (s *Service) createRequest(ctx context.Context, codeID, fingerprint string, p startParams) (*started, error) {
	now := s.now()
	claim, pr, err := s.judgeStart(ctx, p, now)
	if err != nil {
		return nil, err
	}
	id := ulid.Make().String()
	secretBytes := make([]byte, pairingSecretBytes)
	_, _ = rand.Read(secretBytes)
	secret := base64.RawURLEncoding.EncodeToString(secretBytes)
	var previous, proofCert, proofKey *string
	if p.previousDeviceID != "" {
		previous = &p.previousDeviceID
	}
	if pr != nil {
		proofCert, proofKey = &pr.certificate, &pr.key
	}
	audit.SetTarget(ctx, "pairing_request:"+id) // before the insert, which writes the call's audit outbox row
	inserted, err := s.opts.Store.Q().InsertPairingRequest(ctx, dbsqlc.InsertPairingRequestParams{
		ID:                               &id,
		CodeID:                           codeID,
		SecretHash:                       secretHash(secret),
		CsrDer:                           p.csr,
		PublicKeyFingerprint:             fingerprint,
		DeviceName:                       p.deviceName,
		Platform:                         p.platform,
		AgentVersion:                     p.agentVersion,
		SourceAddress:                    p.sourceAddress,
		PreviousDeviceID:                 previous,
		CreatedAt:                        &now,
		ExpiresAt:                        now.Add(s.opts.RequestTTL()),
		DeviceClaim:                      claim,
		PossessionCertificateFingerprint: proofCert,
		PossessionKeyFingerprint:         proofKey,
	})
	if errors.Is(err, store.ErrNotFound) {
		// Used, burned, deleted or expired since verifyCode: the same answer.
		return nil, errCodeRefused()
	}
	if err != nil {
		return nil, fmt.Errorf("pairing: insert request: %w", err)
	}
	row := dbsqlc.PairingRequest(inserted)
	s.log.Info("pairing request started", "request_id", id, "code_id", codeID, "device_name", p.deviceName,
		"source_address", p.sourceAddress, "public_key_fingerprint", fingerprint, "previous_device_id", p.previousDeviceID,
		"device_claim", claim)
	return &started{row: row, secret: secret}, nil
}

// dummyHash stands in for the secret hash of an unknown request, so that an unknown id
// and a wrong secret cost the same comparison.
var dummyHash = make([]byte, sha256.Size)

// follow returns the request id as its node sees it: authenticated by the pairing
// secret, expired if it is overdue, and completed if it was approved (the node is
// collecting its certificate). An unknown id and a wrong secret get errStatusRefused.
func (s *Service) follow(ctx context.Context, id, secret string) (dbsqlc.PairingRequest, error) {
	q := s.opts.Store.Q()
	r, err := q.GetPairingRequest(ctx, id)
	known := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return dbsqlc.PairingRequest{}, fmt.Errorf("pairing: get request: %w", err)
	}
	want := dummyHash
	if known {
		want = r.SecretHash
	}
	if subtle.ConstantTimeCompare(secretHash(secret), want) != 1 || !known {
		return dbsqlc.PairingRequest{}, errStatusRefused()
	}
	audit.SetTarget(ctx, "pairing_request:"+id) // before the writes below, which write the call's audit outbox row
	if overdue(r, s.now()) {
		if err := s.expireDue(ctx); err != nil {
			return dbsqlc.PairingRequest{}, err
		}
		if r, err = q.GetPairingRequest(ctx, id); err != nil {
			return dbsqlc.PairingRequest{}, fmt.Errorf("pairing: get request: %w", err)
		}
	}
	if r.State != stateApproved {
		return r, nil
	}
	now := s.now()
	done, err := q.CompletePairingRequest(ctx, dbsqlc.CompletePairingRequestParams{Now: &now, ID: id})
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Completed meanwhile by another read of the same node.
		done, err = q.GetPairingRequest(ctx, id)
		if err != nil {
			return dbsqlc.PairingRequest{}, fmt.Errorf("pairing: get request: %w", err)
		}
	case err != nil:
		return dbsqlc.PairingRequest{}, fmt.Errorf("pairing: complete request: %w", err)
	default:
		s.log.Info("pairing request completed: the node collected its certificate", "request_id", id, "device_id", deref(done.DeviceID))
	}
	return done, nil
}

// approveParams are an approver's decision.
type approveParams struct {
	id                  string
	expectedFingerprint string
	labels              map[string]string
	reinstate           bool
	replace             string // replace_device_id
	asNew               bool   // new_device
	decidedBy           string
}

// errOverdue is how a decision's transaction says that it met an overdue request: it
// rolls back, the request is expired, and the decision is refused.
var errOverdue = errors.New("the pairing request is overdue")

// approve decides a pending request: the device is registered (or re-paired, as its
// claim and the approver's choice say), the CSR's public key is signed for it and the
// certificate recorded, in one statement for a request that names no device (the
// statement approves only a request still pending), in one transaction with the
// request and the device named locked for the others, and for a request decided or
// overdue since it was read (to say which).
func (s *Service) approve(ctx context.Context, p approveParams) (dbsqlc.PairingRequest, error) {
	labels, err := json.Marshal(nonNil(p.labels))
	if err != nil {
		return dbsqlc.PairingRequest{}, fmt.Errorf("pairing: encode labels: %w", err)
	}
	now := s.now()
	if r, err := s.opts.Store.Q().GetPairingRequest(ctx, p.id); err == nil && r.PreviousDeviceID == nil &&
		r.State == statePending && !overdue(r, now) {
		out, err := s.approveUnlocked(ctx, r, p, labels, now)
		if !errors.Is(err, store.ErrNotFound) {
			if err != nil {
				return dbsqlc.PairingRequest{}, err
			}
			s.approved(out, p.decidedBy)
			return out, nil
		}
	}
	var out dbsqlc.PairingRequest
	err = s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
		r, err := s.lockPending(ctx, q, p.id, now)
		if err != nil {
			return err
		}
		if r.PreviousDeviceID != nil {
			// The claim is judged with the device locked: it holds until commit.
			if err := devices.Lock(ctx, tx, *r.PreviousDeviceID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("pairing: get device: %w", err)
			}
		}
		claim, dev, _, err := s.judgeClaim(ctx, tx, r.PreviousDeviceID, provenOf(r), now)
		if err != nil {
			return err
		}
		target, err := pairedDevice(r, claim, dev, p)
		if err != nil {
			return err
		}
		deviceID, issued, err := s.issue(r, target, p)
		if err != nil {
			return err
		}
		if target == "" {
			out, err = s.approveAsNewDevice(ctx, q, r.ID, deviceID, issued, labels, claim, p.decidedBy, now)
			return err
		}
		reg := devices.Registration{
			Name:                 r.DeviceName,
			Platform:             r.Platform,
			AgentVersion:         r.AgentVersion,
			Labels:               p.labels,
			PublicKeyFingerprint: r.PublicKeyFingerprint,
		}
		if _, err := devices.Repair(ctx, tx, target, reg, p.reinstate, now); err != nil {
			return fmt.Errorf("pairing: re-pair device %s: %w", target, err)
		}
		if claim != claimProven {
			s.log.Warn("pairing request approved to replace a device it did not prove to be", "request_id", r.ID,
				"device_id", deviceID, "claim", claim, "decided_by", p.decidedBy)
		}
		if err := identity.Record(ctx, tx, s.opts.Authority, issued, identity.KindDevice, deviceID, s.opts.ReplicaID); err != nil {
			return err
		}
		n, err := devices.RevokeCertificates(ctx, tx, deviceID, issued.Fingerprint,
			fmt.Sprintf("superseded by re-pairing (request %s)", r.ID), now, now)
		if err != nil {
			return fmt.Errorf("pairing: revoke the device's older certificates: %w", err)
		}
		s.log.Info("device re-paired: older certificates revoked", "device_id", deviceID, "revoked", n)
		out, err = q.ApprovePairingRequest(ctx, dbsqlc.ApprovePairingRequestParams{
			Now:                    &now,
			DecidedBy:              p.decidedBy,
			DeviceID:               &deviceID,
			CertificateDer:         issued.Certificate.Raw,
			CertificateFingerprint: &issued.Fingerprint,
			Labels:                 labels,
			DeviceClaim:            claim,
			ID:                     r.ID,
		})
		if err != nil {
			return fmt.Errorf("pairing: approve request: %w", err)
		}
		return nil
	})
	if err != nil {
		return dbsqlc.PairingRequest{}, s.decisionError(ctx, p.id, err)
	}
	s.approved(out, p.decidedBy)
	return out, nil
}

// approveUnlocked approves r, read pending and naming no device, as a new device in one
// statement; an error matching store.ErrNotFound when it was decided or overdue since.
func (s *Service) approveUnlocked(ctx context.Context, r dbsqlc.PairingRequest, p approveParams, labels []byte, now time.Time) (dbsqlc.PairingRequest, error) {
	if _, err := pairedDevice(r, claimNew, nil, p); err != nil {
		return dbsqlc.PairingRequest{}, err
	}
	deviceID, issued, err := s.issue(r, "", p)
	if err != nil {
		return dbsqlc.PairingRequest{}, err
	}
	return s.approveAsNewDevice(ctx, s.opts.Store.Q(), r.ID, deviceID, issued, labels, claimNew, p.decidedBy, now)
}

// issue checks the key of r against the approver's expectation and signs it for the
// device target, or for a new device ("").
func (s *Service) issue(r dbsqlc.PairingRequest, target string, p approveParams) (deviceID string, issued *identity.Issued, err error) {
	if p.expectedFingerprint != "" && p.expectedFingerprint != r.PublicKeyFingerprint {
		return "", nil, errFailedPrecondition("the request's key is %s, not the expected %s: do not approve a key the node does not show",
			r.PublicKeyFingerprint, p.expectedFingerprint)
	}
	csr, _, err := identity.ParseCSR(r.CsrDer)
	if err != nil {
		return "", nil, fmt.Errorf("pairing: request %s holds a CSR it was accepted with but that no longer parses: %w", r.ID, err)
	}
	deviceID = target
	if deviceID == "" {
		deviceID = ulid.Make().String()
	}
	issued, err = s.opts.Authority.Sign(csr.PublicKey, identity.DeviceIdentity(deviceID), identity.Lifetime(s.opts.DeviceCertLifetime))
	if errors.Is(err, identity.ErrPolicy) {
		return "", nil, errFailedPrecondition("the certificate cannot be issued: %v", err)
	}
	if err != nil {
		return "", nil, fmt.Errorf("pairing: sign: %w", err)
	}
	return deviceID, issued, nil
}

// approved logs an approval and wakes the watches of the request.
func (s *Service) approved(out dbsqlc.PairingRequest, decidedBy string) {
	s.log.Info("pairing request approved", "request_id", out.ID, "device_id", deref(out.DeviceID),
		"certificate_fingerprint", deref(out.CertificateFingerprint), "decided_by", decidedBy)
	s.changes.Wake(out.ID)
}

// approveAsNewDevice approves request id, locked and pending, registering its node as
// the new device deviceID with the certificate issued to it, in one statement.
func (s *Service) approveAsNewDevice(ctx context.Context, q *dbsqlc.Queries, id, deviceID string, issued *identity.Issued,
	labels []byte, claim, decidedBy string, now time.Time,
) (dbsqlc.PairingRequest, error) {
	c := identity.ColumnsOf(s.opts.Authority, issued, identity.KindDevice, s.opts.ReplicaID)
	row, err := q.ApprovePairingRequestAsNewDevice(ctx, dbsqlc.ApprovePairingRequestAsNewDeviceParams{
		Now:                    &now,
		DecidedBy:              decidedBy,
		DeviceID:               &deviceID,
		CertificateDer:         issued.Certificate.Raw,
		CertificateFingerprint: &issued.Fingerprint,
		Labels:                 labels,
		DeviceClaim:            claim,
		ID:                     id,
		Serial:                 c.Serial,
		AuthorityID:            c.AuthorityID,
		Kind:                   c.Kind,
		Subject:                c.Subject,
		DnsNames:               c.DNSNames,
		IpAddresses:            c.IPAddresses,
		Uris:                   c.URIs,
		NotBefore:              c.NotBefore,
		NotAfter:               c.NotAfter,
		IssuedByReplica:        c.IssuedByReplica,
	})
	if err != nil {
		return dbsqlc.PairingRequest{}, fmt.Errorf("pairing: approve request as device %s: %w", deviceID, err)
	}
	return dbsqlc.PairingRequest(row), nil
}

// reject decides a pending request with a reason.
func (s *Service) reject(ctx context.Context, id, reason, decidedBy string) (dbsqlc.PairingRequest, error) {
	if strings.TrimSpace(reason) == "" {
		return dbsqlc.PairingRequest{}, errInvalid("a reason is required")
	}
	now := s.now()
	var out dbsqlc.PairingRequest
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
		if _, err := s.lockPending(ctx, q, id, now); err != nil {
			return err
		}
		var err error
		out, err = q.RejectPairingRequest(ctx, dbsqlc.RejectPairingRequestParams{Now: &now, DecidedBy: decidedBy, Reason: reason, ID: id})
		if err != nil {
			return fmt.Errorf("pairing: reject request: %w", err)
		}
		return nil
	})
	if err != nil {
		return dbsqlc.PairingRequest{}, s.decisionError(ctx, id, err)
	}
	s.log.Info("pairing request rejected", "request_id", id, "decided_by", decidedBy)
	s.changes.Wake(id)
	return out, nil
}

// lockPending locks request id for a decision and checks that it is pending and not
// overdue (errOverdue when it is).
func (s *Service) lockPending(ctx context.Context, q *dbsqlc.Queries, id string, now time.Time) (dbsqlc.PairingRequest, error) {
	r, err := q.GetPairingRequestForUpdate(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return r, errNoRequest(id)
	}
	if err != nil {
		return r, fmt.Errorf("pairing: get request: %w", err)
	}
	if overdue(r, now) {
		return r, errOverdue
	}
	if r.State != statePending {
		return r, errNotPending(id, r.State)
	}
	return r, nil
}

// decisionError finishes a failed decision: an overdue request is expired (and the
// expiry audited) before the refusal.
func (s *Service) decisionError(ctx context.Context, id string, err error) error {
	if !errors.Is(err, errOverdue) {
		return err
	}
	if err := s.expireDue(ctx); err != nil {
		return err
	}
	return errNotPending(id, stateExpired)
}

// getRequest returns a request for the control plane, expiring overdue ones first.
func (s *Service) getRequest(ctx context.Context, id string) (dbsqlc.PairingRequest, error) {
	r, err := s.opts.Store.Q().GetPairingRequest(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return r, errNoRequest(id)
	}
	if err != nil {
		return r, fmt.Errorf("pairing: get request: %w", err)
	}
	if !overdue(r, s.now()) {
		return r, nil
	}
	if err := s.expireDue(ctx); err != nil {
		return r, err
	}
	if r, err = s.opts.Store.Q().GetPairingRequest(ctx, id); err != nil {
		return r, fmt.Errorf("pairing: get request: %w", err)
	}
	return r, nil
}

// listRequests returns a page of requests in state ("" for all), newest first, and the
// token of the next page, expiring overdue ones first.
func (s *Service) listRequests(ctx context.Context, state, pageToken string, limit int) ([]dbsqlc.PairingRequest, string, error) {
	params := dbsqlc.ListPairingRequestsParams{State: state, PageLimit: int32(limit) + 1}
	if pageToken != "" {
		at, id, err := pagetoken.Decode(pageToken)
		if err != nil {
			return nil, "", errInvalid("malformed page token")
		}
		params.AfterCreatedAt, params.AfterID = &at, id
	}
	if err := s.expireDue(ctx); err != nil {
		return nil, "", err
	}
	rows, err := s.opts.Store.Q().ListPairingRequests(ctx, params)
	if err != nil {
		return nil, "", fmt.Errorf("pairing: list requests: %w", err)
	}
	rows, next := pagetoken.Page(rows, limit, func(r dbsqlc.PairingRequest) (time.Time, string) { return r.CreatedAt, r.ID })
	return rows, next, nil
}

// nonNil returns m, or an empty map for nil (which JSON would encode as null).
func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// deref returns *p, or "" for nil.
func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// orNone returns s, or "no reason given" for "".
func orNone(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}
