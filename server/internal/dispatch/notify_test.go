package dispatch

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestStatementsNotifyOnce: a statement that changes many dispatches, and one that
// stores output for many, send one notification per channel (more only where the lines
// do not fit in a payload), which together hold a line for each changed row; a lone
// insert still sends its own.
func TestStatementsNotifyOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := storetest.URL(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	listener, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	for _, ch := range []string{ChannelDispatch, ChannelOutput} {
		if _, err := listener.Exec(ctx, "listen "+ch); err != nil {
			t.Fatal(err)
		}
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// received reads notifications until want lines arrived on channel.
	received := func(channel string, want int) (payloads []string, lines []string) {
		t.Helper()
		for len(lines) < want {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			n, err := listener.WaitForNotification(wctx)
			cancel()
			if err != nil {
				t.Fatalf("%d lines of %s received, want %d: %v", len(lines), channel, want, err)
			}
			if n.Channel != channel {
				t.Fatalf("a notification of %s (%q) while waiting for %s", n.Channel, n.Payload, channel)
			}
			if len(n.Payload) >= 8000 {
				t.Fatalf("a payload of %d bytes", len(n.Payload))
			}
			payloads = append(payloads, n.Payload)
			lines = append(lines, strings.Split(n.Payload, "\n")...)
		}
		return payloads, lines
	}

	exec(`insert into devices (id, name, public_key_fingerprint, session_id, attached_replica)
		values ('dev-1', 'n1', 'sha256:' || repeat('a', 64), 'sess-1', 'r1')`)
	const n = 300
	for i := range n {
		exec(`insert into dispatches (id, device_id, capability, input, request_hash, created_by, created_at,
			deadline, max_output_bytes, state, session_id, sent_at)
			values ($1, 'dev-1', 'echo', '{}', sha256('x'), 'me', now(), now() + interval '1 hour', 1024, 'sent', 'sess-1', now())`,
			fmt.Sprintf("dispatch-%03d", i))
	}
	if _, lines := received(ChannelDispatch, n); len(lines) != n || lines[0] != "dev-1 dispatch-000 queued" {
		t.Fatalf("%d inserts notified %d lines, the first %q", n, len(lines), lines[0])
	}

	exec(`insert into dispatch_output (dispatch_id, "offset", stream, data)
		select id, o, 'stdout', 'x' from dispatches, generate_series(0, 1) o`)
	payloads, lines := received(ChannelOutput, n)
	slices.Sort(lines)
	if len(payloads) != 1 || len(lines) != n || len(slices.Compact(lines)) != n {
		t.Fatalf("output of %d dispatches stored by one statement: %d payloads, %d lines", n, len(payloads), len(lines))
	}

	exec(`update dispatches set state = 'succeeded', finished_at = now()`)
	payloads, lines = received(ChannelDispatch, n)
	// 300 lines of 34 bytes and their newlines: 228 fit in a payload (7,979 bytes).
	if len(payloads) != 2 {
		t.Errorf("the end of %d dispatches in one statement came in %d notifications, want 2", n, len(payloads))
	}
	for i, l := range slices.Sorted(slices.Values(lines)) {
		if want := fmt.Sprintf("dev-1 dispatch-%03d state:succeeded", i); l != want {
			t.Fatalf("line %d %q, want %q", i, l, want)
		}
	}
}
