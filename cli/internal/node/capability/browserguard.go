package capability

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The guard is an HTTP proxy on loopback that the page of one dispatch is made to use
// for every request (the proxy of the browser context the page is opened in, with
// loopback not bypassed): navigations, redirects, subresources, popups, workers and
// service workers alike, whatever target of the context makes them. Chromium's own
// requests, outside that context (Google's sign-in, component updates: Debian's build
// makes them whatever its flags), use the browser's --proxy-server, the guard's second
// listener, which refuses them all without reporting them: they are not the page's. It lets a request through only to a host of the profile's allowed
// domains, resolves the name itself, refuses the addresses node.toml does not allow
// (private, loopback, link-local, metadata), and connects to the vetted address, so
// that a name that resolves differently later (DNS rebinding) cannot lead elsewhere;
// Chromium resolves nothing itself (--host-resolver-rules maps every name to
// nothing). It counts the bytes received from the network against the page-size cap
// and records every request it refuses.

// maxBlockedReported bounds the blocked requests a result lists.
const maxBlockedReported = 100

// BlockedRequest is a request the browser was not allowed to make.
type BlockedRequest struct {
	// URL is the request's URL; for https, only the scheme, host and port are seen.
	URL string `json:"url"`
	// Reason says why it was blocked.
	Reason string `json:"reason"`
}

// Reasons a request is blocked.
const (
	blockedDomain   = "the host is not among the profile's allowed domains"
	blockedScheme   = "only http and https may be loaded"
	blockedAddress  = "the host's addresses are private, loopback, link-local or metadata addresses, which node.toml does not allow"
	blockedResolve  = "the host's name does not resolve"
	blockedPageSize = "the page-size cap was reached"
	blockedPopup    = "popups are closed"
)

// addressPolicy decides which addresses the browser may reach.
type addressPolicy struct {
	allowed []netip.Prefix // node.toml's browser.allow_networks
}

// specialNetworks are refused unless node.toml allows them: what is not the public
// internet.
var specialNetworks = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
	"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
)

// metadataAddresses are the cloud instance metadata services: refused unless
// browser.allow_networks names the address itself, whatever wider network it allows.
var metadataAddresses = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OpenStack, ...
	netip.MustParseAddr("169.254.170.2"),   // AWS ECS task metadata
	netip.MustParseAddr("fd00:ec2::254"),   // AWS over IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
}

func mustPrefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// permits reports whether the browser may connect to a.
func (p addressPolicy) permits(a netip.Addr) bool {
	a = a.Unmap()
	if slices.Contains(metadataAddresses, a) {
		return slices.ContainsFunc(p.allowed, func(n netip.Prefix) bool { return n.IsSingleIP() && n.Addr() == a })
	}
	if !slices.ContainsFunc(specialNetworks, func(n netip.Prefix) bool { return n.Contains(a) }) &&
		!a.IsLoopback() && !a.IsPrivate() && !a.IsLinkLocalUnicast() && !a.IsUnspecified() && !a.IsMulticast() {
		return true
	}
	return slices.ContainsFunc(p.allowed, func(n netip.Prefix) bool { return n.Contains(a) })
}

// domainList is a profile's allowed domains: a domain allows itself and its
// subdomains, an IP address only itself; any port.
type domainList struct {
	domains []string
	addrs   []netip.Addr
}

// newDomainList parses allowed domains; an entry that is neither a domain nor an IP
// address is an error.
func newDomainList(entries []string) (domainList, error) {
	var l domainList
	for _, e := range entries {
		e = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(e)), ".")
		if a, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
			l.addrs = append(l.addrs, a.Unmap())
			continue
		}
		if e == "" || strings.ContainsAny(e, "/:@ *?#") || strings.HasPrefix(e, ".") || strings.Contains(e, "..") {
			return domainList{}, fmt.Errorf("allowed domain %q is neither a domain nor an IP address", e)
		}
		l.domains = append(l.domains, e)
	}
	if len(l.domains) == 0 && len(l.addrs) == 0 {
		return domainList{}, errors.New("the profile allows no domain")
	}
	return l, nil
}

// allows reports whether host (a name or an IP address, without port) may be loaded.
func (l domainList) allows(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		return slices.Contains(l.addrs, a.Unmap())
	}
	return slices.ContainsFunc(l.domains, func(d string) bool { return host == d || strings.HasSuffix(host, "."+d) })
}

// guard is the proxy of one dispatch. Start it with startGuard and Close it at the end.
type guard struct {
	domains  domainList
	policy   addressPolicy
	upstream *url.URL // the profile's proxy, or nil
	maxBytes int64
	resolver *net.Resolver
	dialer   net.Dialer
	exceeded func() // called once when the page-size cap is reached

	ln  net.Listener
	srv *http.Server
	tr  *http.Transport

	own    net.Listener // the browser's own requests, refused
	ownSrv *http.Server

	received atomic.Int64
	over     atomic.Bool

	mu      sync.Mutex // guards the following
	blocked []BlockedRequest
	nBlock  int                   // blocked requests, counted beyond those kept
	hosts   map[string]string     // "scheme://host:port" of blocked requests, by reason
	conns   map[net.Conn]struct{} // open connections to the network
}

// startGuard starts a guard on 127.0.0.1.
func startGuard(domains domainList, policy addressPolicy, upstream *url.URL, maxBytes int64, exceeded func()) (*guard, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start the browser's guard proxy: %w", err)
	}
	g := &guard{
		domains: domains, policy: policy, upstream: upstream, maxBytes: maxBytes, resolver: net.DefaultResolver,
		dialer: net.Dialer{Timeout: 15 * time.Second}, exceeded: exceeded, ln: ln,
		hosts: map[string]string{}, conns: map[net.Conn]struct{}{},
	}
	g.tr = &http.Transport{
		DialContext:           g.dialVetted,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		DisableCompression:    true, // the browser asked for what it takes
	}
	if upstream != nil && upstream.Scheme != "socks5" {
		// Plain http goes to the upstream proxy as absolute-form requests; the target
		// was vetted before. https is tunnelled through it with CONNECT (tunnel).
		g.tr.Proxy = http.ProxyURL(upstream)
		g.tr.DialContext = g.dialCounted
	}
	if g.own, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		ln.Close()
		return nil, fmt.Errorf("start the browser's guard proxy: %w", err)
	}
	g.srv = &http.Server{Handler: g, ReadHeaderTimeout: 30 * time.Second, ErrorLog: nil}
	g.ownSrv = &http.Server{Handler: http.HandlerFunc(refuseOwn), ReadHeaderTimeout: 30 * time.Second, ErrorLog: nil}
	go g.srv.Serve(ln)       //nolint:errcheck // ends with Close
	go g.ownSrv.Serve(g.own) //nolint:errcheck // ends with Close
	return g, nil
}

// addr is the guard's address, for the page's browser context.
func (g *guard) addr() string { return g.ln.Addr().String() }

// ownAddr is the address that refuses the browser's own requests, for --proxy-server.
func (g *guard) ownAddr() string { return g.own.Addr().String() }

// refuseOwn refuses a request Chromium makes of its own accord, outside the page's
// browser context, CONNECT included: none leaves the node, and none is the page's to
// report.
func refuseOwn(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "palyra: the browser's own requests are refused", http.StatusForbidden)
}

// Close stops the guard and closes every connection it holds.
func (g *guard) Close() {
	g.ownSrv.Close()
	g.srv.Close()
	g.tr.CloseIdleConnections()
	g.closeConns()
}

// closeConns closes the connections to the network.
func (g *guard) closeConns() {
	g.mu.Lock()
	conns := slices.Collect(maps.Keys(g.conns))
	g.mu.Unlock()
	for _, c := range conns {
		c.Close() // takes g.mu
	}
}

// report returns the blocked requests (at most maxBlockedReported), how many there
// were, and the bytes received.
func (g *guard) report() (blocked []BlockedRequest, n int, received int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.blocked), g.nBlock, g.received.Load()
}

// blockedOrigin returns why requests to the origin of u ("scheme://host:port") were
// blocked, or "".
func (g *guard) blockedOrigin(u *url.URL) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.hosts[originKey(u)]
}

// originKey is "scheme://host:port" of u, with the scheme's default port made explicit.
func originKey(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return u.Scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// block records a blocked request.
func (g *guard) block(u *url.URL, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nBlock++
	if reason != blockedPageSize {
		g.hosts[originKey(u)] = reason
	}
	if len(g.blocked) < maxBlockedReported {
		g.blocked = append(g.blocked, BlockedRequest{URL: redactURL(u), Reason: reason})
	}
}

// blockPopup records a popup that was closed.
func (g *guard) blockPopup(rawURL string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nBlock++
	if len(g.blocked) < maxBlockedReported {
		if u, err := url.Parse(rawURL); err == nil {
			rawURL = redactURL(u)
		}
		g.blocked = append(g.blocked, BlockedRequest{URL: rawURL, Reason: blockedPopup})
	}
}

// redactURL drops the credentials a URL holds, and a query or fragment beyond 2 KiB.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	s := c.String()
	if len(s) > 2048 {
		s = truncate(s, 2048)
	}
	return s
}

// ServeHTTP serves the browser's requests: CONNECT tunnels for https (and
// WebSockets over TLS), absolute-form requests for http.
func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		g.serveConnect(w, r)
		return
	}
	u := r.URL
	if !u.IsAbs() {
		http.Error(w, "this proxy serves absolute-form requests only", http.StatusBadRequest)
		return
	}
	if u.Scheme != "http" {
		g.block(u, blockedScheme)
		http.Error(w, "blocked by Palyra: "+blockedScheme, http.StatusForbidden)
		return
	}
	if reason := g.vetHost(u); reason != "" {
		g.block(u, reason)
		http.Error(w, "blocked by Palyra: "+reason, http.StatusForbidden)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	for _, h := range []string{"Proxy-Connection", "Proxy-Authorization", "Connection", "Keep-Alive", "Te", "Trailer", "Upgrade"} {
		out.Header.Del(h)
	}
	if g.upstream != nil {
		// The upstream proxy connects by name: vet the name's addresses here.
		if _, reason := g.resolve(r.Context(), u.Hostname()); reason != "" {
			g.block(u, reason)
			http.Error(w, "blocked by Palyra: "+reason, http.StatusForbidden)
			return
		}
	}
	resp, err := g.tr.RoundTrip(out)
	if err != nil {
		g.failed(w, u, err)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		if k == "Connection" || k == "Keep-Alive" || k == "Proxy-Connection" || k == "Transfer-Encoding" {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, resp.Body); err != nil && g.over.Load() {
		g.block(u, blockedPageSize)
	}
}

// serveConnect tunnels to a vetted address.
func (g *guard) serveConnect(w http.ResponseWriter, r *http.Request) {
	u := &url.URL{Scheme: "https", Host: r.Host}
	if _, port, err := net.SplitHostPort(r.Host); err != nil || port == "" {
		http.Error(w, "CONNECT needs host:port", http.StatusBadRequest)
		return
	} else if port == "80" {
		u.Scheme = "http" // a WebSocket over plain http, tunnelled
	}
	if reason := g.vetHost(u); reason != "" {
		g.block(u, reason)
		http.Error(w, "blocked by Palyra: "+reason, http.StatusForbidden)
		return
	}
	up, err := g.tunnel(r.Context(), r.Host)
	if err != nil {
		g.failed(w, u, err)
		return
	}
	defer up.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot tunnel", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
	down, rw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer down.Close()
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, down) //nolint:errcheck // ends when either side closes
		up.Close()
		close(done)
	}()
	if _, err := io.Copy(down, up); err != nil && g.over.Load() {
		g.block(u, blockedPageSize)
	}
	down.Close()
	<-done
}

// failed answers a request the guard could not forward: blocked (an address the
// policy refuses, the page-size cap) or unreachable.
func (g *guard) failed(w http.ResponseWriter, u *url.URL, err error) {
	var refused *errRefusedAddress
	switch {
	case errors.As(err, &refused):
		g.block(u, refused.reason)
		http.Error(w, "blocked by Palyra: "+refused.reason, http.StatusForbidden)
	case g.over.Load():
		g.block(u, blockedPageSize)
		http.Error(w, "blocked by Palyra: "+blockedPageSize, http.StatusForbidden)
	default:
		http.Error(w, "Palyra's browser proxy: "+dialError(err), http.StatusBadGateway)
	}
}

// dialError describes a failure to reach a host without quoting the upstream proxy.
func dialError(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "the host did not answer in time"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return "cannot reach the host: " + oe.Err.Error()
	}
	return "cannot reach the host"
}

// vetHost checks u's host against the allowed domains and resolves it to addresses
// the policy permits; it returns why it is blocked, or "".
func (g *guard) vetHost(u *url.URL) string {
	if g.over.Load() {
		return blockedPageSize
	}
	if !g.domains.allows(u.Hostname()) {
		return blockedDomain
	}
	return ""
}

// resolve returns the addresses of host the policy permits, or why there are none.
func (g *guard) resolve(ctx context.Context, host string) ([]netip.Addr, string) {
	host = strings.Trim(host, "[]")
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if addrs, err = g.resolver.LookupNetIP(rctx, "ip", host); err != nil || len(addrs) == 0 {
			return nil, blockedResolve
		}
	}
	var ok []netip.Addr
	for _, a := range addrs {
		if g.policy.permits(a) {
			ok = append(ok, a.Unmap())
		}
	}
	if len(ok) == 0 {
		return nil, blockedAddress
	}
	return ok, ""
}

// errRefusedAddress is the dial error of a host whose addresses are refused.
type errRefusedAddress struct{ reason string }

func (e *errRefusedAddress) Error() string { return e.reason }

// dialVetted dials host:port at the addresses resolve permits (the Transport's dialer
// without an upstream proxy). A refusal is recorded by the caller through the error.
func (g *guard) dialVetted(ctx context.Context, network, hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	addrs, reason := g.resolve(ctx, host)
	if reason != "" {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &errRefusedAddress{reason}}
	}
	var last error
	for _, a := range addrs {
		c, err := g.dialCounted(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

// dialCounted dials addr and counts what it receives.
func (g *guard) dialCounted(ctx context.Context, network, addr string) (net.Conn, error) {
	if g.over.Load() {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New(blockedPageSize)}
	}
	c, err := g.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cc := &countedConn{Conn: c, g: g}
	g.mu.Lock()
	g.conns[cc] = struct{}{}
	g.mu.Unlock()
	return cc, nil
}

// tunnel opens a connection to hostport for a CONNECT: directly to a vetted address,
// or through the upstream proxy with CONNECT to a vetted address.
func (g *guard) tunnel(ctx context.Context, hostport string) (net.Conn, error) {
	if g.upstream == nil {
		return g.dialVetted(ctx, "tcp", hostport)
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	addrs, reason := g.resolve(ctx, host)
	if reason != "" {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: &errRefusedAddress{reason}}
	}
	target := net.JoinHostPort(addrs[0].String(), port)
	c, err := g.dialCounted(ctx, "tcp", upstreamHostPort(g.upstream))
	if err != nil {
		return nil, err
	}
	if g.upstream.Scheme == "https" {
		tc := tls.Client(c, &tls.Config{ServerName: g.upstream.Hostname(), MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, errors.New("the TLS handshake with the profile's proxy failed")
		}
		c = tc
	}
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if u := g.upstream.User; u != nil {
		pw, _ := u.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)) + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return nil, errors.New("the profile's proxy did not answer CONNECT")
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("the profile's proxy refused the tunnel: %s", resp.Status)
	}
	if br.Buffered() > 0 {
		c.Close()
		return nil, errors.New("the profile's proxy sent data before the tunnel opened")
	}
	return c, nil
}

// upstreamHostPort is the proxy's host:port, with the scheme's default port.
func upstreamHostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := 80
	if u.Scheme == "https" {
		port = 443
	}
	return net.JoinHostPort(u.Hostname(), strconv.Itoa(port))
}

// countedConn counts the bytes it reads against the page-size cap.
type countedConn struct {
	net.Conn
	g *guard
}

// Read counts what it reads; past the cap, it closes every connection.
func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.g.received.Add(int64(n)) > c.g.maxBytes && c.g.over.CompareAndSwap(false, true) {
		go func() {
			c.g.closeConns()
			c.g.exceeded()
		}()
	}
	return n, err
}

// Close forgets the connection.
func (c *countedConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c)
	c.g.mu.Unlock()
	return c.Conn.Close()
}
