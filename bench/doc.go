// Package bench measures palyrad's dispatch path end to end, through the surfaces a
// deployment has: the palyrad binary in a process of its own (its TLS listener, HTTP/2,
// PostgreSQL), the generated Connect clients in gen/go, and fake nodes that pair with
// the public pairing flow and attach with their own device certificates over the real
// Attach stream. It imports nothing from server/: Go's internal rule forbids it, and a
// separate process keeps the client's memory and CPU out of the server's figures.
//
// The benchmarks live in the _test.go files and run only with -bench; `make bench`
// runs them against a throwaway PostgreSQL (or the one DATABASE_URL names), and
// BENCHMARKS.md at the repository root records what they measured. Each benchmark
// creates a database of its own on that server, and drops it afterwards.
//
// BenchmarkCompat and BenchmarkCompatNode (compat_test.go) measure the OpenAI-compatible
// API with the official Go SDK (openai-go): the latency palyrad adds to a chat
// completion (and to the first token of a stream) over a fake OpenAI-compatible server
// called directly in the same run, as an upstream provider and behind a real node
// agent's llm.chat.
//
// BenchmarkPeers (peers_test.go) measures, in the same run and on the same PostgreSQL,
// the systems a user would pick instead: the naive durable relay of PERF-BASELINES.md
// (bench/cmd/durablerelay), River and NATS JetStream; after the benchmarks, TestMain
// prints the ratio table (ratios_test.go) with issue 17's targets against them.
//
// TestFaults (faults_test.go) is the fault suite: `make faults` runs it with
// PALYRA_FAULTS=1 (without, it is skipped), and RELIABILITY.md records what it found.
// It starts a PostgreSQL cluster of its own (it kills and stalls it), two palyrad
// replicas and real node agents (`palyra node run`), and takes its settings from
// FAULTS_SEED, FAULTS_DURATION and the other FAULTS_* variables listed on
// faultsConfig.
//
// Environment:
//
//	DATABASE_URL            PostgreSQL superuser URL (required but by BenchmarkBaseline
//	                        and BenchmarkPeers/jetstream; the others skip without it)
//	PALYRAD, PALYRA         palyrad and palyra binaries to run (the names make test uses
//	                        for bin/); default: built from ./server and ./cli once per run
//	PALYRA_BENCH_DURABLE_PG 1 turns fsync, synchronous_commit and full_page_writes on with
//	                        ALTER SYSTEM (make bench sets it for its throwaway server only)
//	PALYRA_BENCH_NODES      idle nodes BenchmarkIdleNodes attaches (default 500)
//	PALYRA_BENCH_OUTPUT_BYTES output a fake node sends for each dispatch, in one
//	                        message (default 128)
//	PALYRA_BENCH_SLOW_ADDRESSES, PALYRA_BENCH_SLOW_STREAMS, PALYRA_BENCH_SLOW_HOLD
//	                        the attack of BenchmarkSlowCallers (slowcallers_test.go)
//	PALYRA_BENCH_PROFILE    directory: palyrad runs with its pprof listener, and each
//	                        measured run writes palyrad's CPU profile (the first
//	                        PALYRA_BENCH_PROFILE_SECONDS, default 5, of the run) and
//	                        allocation profiles there (profile_test.go)
package bench
