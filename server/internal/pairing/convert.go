package pairing

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/gen/dbsqlc"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// The conversions between database rows and the wire types, in one place. None of them
// ever copies a code MAC, a secret hash or a CSR into a message.

// requestStates maps the stored states of requests to the wire's.
var requestStates = map[string]nodev1.PairingState{
	statePending:   nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL,
	stateApproved:  nodev1.PairingState_PAIRING_STATE_APPROVED,
	stateCompleted: nodev1.PairingState_PAIRING_STATE_COMPLETED,
	stateRejected:  nodev1.PairingState_PAIRING_STATE_REJECTED,
	stateExpired:   nodev1.PairingState_PAIRING_STATE_EXPIRED,
}

// deviceClaims maps the stored device claims to the wire's.
var deviceClaims = map[string]nodev1.DeviceClaim{
	claimNew:      nodev1.DeviceClaim_DEVICE_CLAIM_NEW,
	claimProven:   nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN,
	claimUnproven: nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN,
	claimRevoked:  nodev1.DeviceClaim_DEVICE_CLAIM_REVOKED,
}

// stateFilter returns the stored state for a wire state, "" for unspecified (no
// filter); ok is false for a value that is no state.
func stateFilter(s nodev1.PairingState) (state string, ok bool) {
	if s == nodev1.PairingState_PAIRING_STATE_UNSPECIFIED {
		return "", true
	}
	for k, v := range requestStates {
		if v == s {
			return k, true
		}
	}
	return "", false
}

// methodFromProto returns the stored method of a wire method; ok is false for
// unspecified and unknown values.
func methodFromProto(m controlplanev1.PairingMethod) (method string, ok bool) {
	switch m {
	case controlplanev1.PairingMethod_PAIRING_METHOD_PIN:
		return methodPIN, true
	case controlplanev1.PairingMethod_PAIRING_METHOD_QR:
		return methodQR, true
	}
	return "", false
}

// codeStates maps the computed states of codes to the wire's.
var codeStates = map[string]controlplanev1.PairingCodeState{
	codeActive:  controlplanev1.PairingCodeState_PAIRING_CODE_STATE_ACTIVE,
	codeUsed:    controlplanev1.PairingCodeState_PAIRING_CODE_STATE_USED,
	codeExpired: controlplanev1.PairingCodeState_PAIRING_CODE_STATE_EXPIRED,
	codeBurned:  controlplanev1.PairingCodeState_PAIRING_CODE_STATE_BURNED,
	codeDeleted: controlplanev1.PairingCodeState_PAIRING_CODE_STATE_DELETED,
}

// codeProto describes a code at now, without its MAC.
func codeProto(c dbsqlc.PairingCode, now time.Time) *controlplanev1.PairingCode {
	method := controlplanev1.PairingMethod_PAIRING_METHOD_PIN
	if c.Method == methodQR {
		method = controlplanev1.PairingMethod_PAIRING_METHOD_QR
	}
	return &controlplanev1.PairingCode{
		Id:             c.ID,
		Method:         method,
		Label:          c.Label,
		State:          codeStates[codeState(c, now)],
		CreateTime:     timestamppb.New(c.CreatedAt),
		ExpireTime:     timestamppb.New(c.ExpiresAt),
		CreatedBy:      c.CreatedBy,
		FailedAttempts: uint32(max(c.FailedAttempts, 0)),
		RequestId:      deref(c.RequestID),
	}
}

// requestProto describes a request as an approver sees it at now, with its device
// claim as judged then, without its secret hash and CSR.
func requestProto(r dbsqlc.PairingRequest, claim string, now time.Time) (*controlplanev1.PairingRequest, error) {
	out := &controlplanev1.PairingRequest{
		Id:                     r.ID,
		State:                  requestStates[r.State],
		DeviceName:             r.DeviceName,
		Platform:               r.Platform,
		AgentVersion:           r.AgentVersion,
		SourceAddress:          r.SourceAddress,
		PublicKeyFingerprint:   r.PublicKeyFingerprint,
		CreateTime:             timestamppb.New(r.CreatedAt),
		Age:                    durationpb.New(max(now.Sub(r.CreatedAt), 0)),
		ExpireTime:             timestamppb.New(r.ExpiresAt),
		CodeId:                 r.CodeID,
		PreviousDeviceId:       deref(r.PreviousDeviceID),
		DecidedBy:              r.DecidedBy,
		Reason:                 r.Reason,
		DeviceId:               deref(r.DeviceID),
		CertificateFingerprint: deref(r.CertificateFingerprint),
		DeviceClaim:            deviceClaims[claim],
	}
	if claim == claimProven {
		out.PossessionCertificateFingerprint = deref(r.PossessionCertificateFingerprint)
	}
	if r.DecidedAt != nil {
		out.DecideTime = timestamppb.New(*r.DecidedAt)
	}
	if len(r.Labels) > 0 {
		if err := json.Unmarshal(r.Labels, &out.Labels); err != nil {
			return nil, fmt.Errorf("pairing: request %s: labels: %w", r.ID, err)
		}
	}
	return out, nil
}

// statusProto describes a request as its node sees it; once a certificate was issued,
// with the certificate and caPEM.
func statusProto(r dbsqlc.PairingRequest, caPEM []byte) (*nodev1.PairingStatus, error) {
	out := &nodev1.PairingStatus{
		RequestId: r.ID,
		State:     requestStates[r.State],
		Reason:    r.Reason,
	}
	if (r.State == stateApproved || r.State == stateCompleted) && len(r.CertificateDer) > 0 {
		cert, err := x509.ParseCertificate(r.CertificateDer)
		if err != nil {
			return nil, fmt.Errorf("pairing: request %s: parse its certificate: %w", r.ID, err)
		}
		out.DeviceId = deref(r.DeviceID)
		out.CertificatePem = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.CertificateDer}))
		out.CaCertificatePem = string(caPEM)
		out.CertificateExpireTime = timestamppb.New(cert.NotAfter)
	}
	return out, nil
}
