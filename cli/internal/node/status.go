package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// The files a running agent keeps in its state directory.
const (
	// StatusFile is the running agent's status (JSON, AgentStatus), which `palyra node
	// status` reads; the agent removes it when it stops.
	StatusFile = "agent.json"
	// LockFile is locked by the running agent, so that two agents never share a
	// state directory (they would run dispatches twice).
	LockFile = "agent.lock"
)

// AgentStatus is what a running agent records in agent.json.
type AgentStatus struct {
	// PID is the agent's process id.
	PID int `json:"pid"`
	// StartedAt is when the agent started.
	StartedAt time.Time `json:"started_at"`
	// URL is palyrad's base URL.
	URL string `json:"url"`
	// DeviceID is the node's device id.
	DeviceID string `json:"device_id"`
	// Attached is true while a session is open.
	Attached bool `json:"attached"`
	// SessionID identifies the open session.
	SessionID string `json:"session_id,omitempty"`
	// AttachedSince is when the open session began.
	AttachedSince time.Time `json:"attached_since,omitzero"`
	// LastHeartbeat is when the agent last sent a heartbeat.
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	// Running is how many dispatches ran at the last heartbeat.
	Running int `json:"running"`
	// LastError is why the last session or attempt failed, while detached.
	LastError string `json:"last_error,omitempty"`
	// UpdatedAt is when the agent wrote the file.
	UpdatedAt time.Time `json:"updated_at"`
}

// updateStatus changes the agent's status and writes agent.json. A failure to write
// is logged: the status is informative.
func (a *Agent) updateStatus(change func(*AgentStatus)) {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	change(&a.status)
	a.status.UpdatedAt = a.now().UTC()
	b, err := json.MarshalIndent(a.status, "", "  ")
	if err == nil {
		err = a.dir.write(StatusFile, append(b, '\n'), 0o600)
	}
	if err != nil {
		a.log.Warn("cannot write the agent's status file", "err", err)
	}
}

// AgentStatus reads agent.json. It returns nil when no agent runs on the directory:
// the file is missing, or the process that wrote it is gone (killed before it could
// remove it).
func (s *StateDir) AgentStatus() (*AgentStatus, error) {
	b, err := os.ReadFile(s.File(StatusFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st := &AgentStatus{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("%s: %w", s.File(StatusFile), err)
	}
	if st.PID <= 0 || !processAlive(st.PID) {
		return nil, nil
	}
	return st, nil
}
