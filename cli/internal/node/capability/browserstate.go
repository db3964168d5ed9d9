package capability

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strings"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
)

// MaxBrowserStateBytes bounds a profile's state as it travels (BrowserState.storage_state).
const MaxBrowserStateBytes = 1 << 20

// storageState is a browser's cookies and local storage in Playwright's storageState
// shape, which BrowserProfile.storage_state and BrowserState.storage_state hold.
type storageState struct {
	Cookies []stateCookie `json:"cookies"`
	Origins []stateOrigin `json:"origins"`
}

// stateCookie is a cookie in Playwright's shape.
type stateCookie struct {
	Name     string  `json:"name"`
	Value    string  `json:"value"`
	Domain   string  `json:"domain"`
	Path     string  `json:"path"`
	Expires  float64 `json:"expires"` // seconds since the epoch; -1 for a session cookie
	HTTPOnly bool    `json:"httpOnly"`
	Secure   bool    `json:"secure"`
	SameSite string  `json:"sameSite"` // "Strict", "Lax" or "None"
}

// stateOrigin is the local storage of one origin.
type stateOrigin struct {
	Origin       string         `json:"origin"`
	LocalStorage []stateStorage `json:"localStorage"`
}

// stateStorage is one local storage item.
type stateStorage struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// parseStorageState decodes a profile's state; empty is no state. Errors never quote
// the state.
func parseStorageState(b []byte) (storageState, error) {
	var s storageState
	if len(bytes.TrimSpace(b)) == 0 {
		return s, nil
	}
	if err := json.Unmarshal(b, &s); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return storageState{}, fmt.Errorf("the profile's storage state is not JSON (at byte %d)", se.Offset)
		}
		return storageState{}, errors.New("the profile's storage state is not in Playwright's storageState shape")
	}
	for _, c := range s.Cookies {
		if c.Name == "" && c.Value == "" || c.Domain == "" {
			return storageState{}, errors.New("the profile's storage state has a cookie without a name or domain")
		}
	}
	for _, o := range s.Origins {
		if u, err := url.Parse(o.Origin); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return storageState{}, errors.New("the profile's storage state has an origin that is not an http(s) origin")
		}
	}
	return s, nil
}

// cookieParams turns the state's cookies into what Storage.setCookies takes.
func (s storageState) cookieParams() []*network.CookieParam {
	ps := make([]*network.CookieParam, 0, len(s.Cookies))
	for _, c := range s.Cookies {
		p := &network.CookieParam{
			Name: c.Name, Value: c.Value, Domain: c.Domain, Path: c.Path, Secure: c.Secure, HTTPOnly: c.HTTPOnly,
		}
		if p.Path == "" {
			p.Path = "/"
		}
		if c.Expires > 0 && !math.IsInf(c.Expires, 0) {
			p.Expires = cdp.TimeSinceEpoch(c.Expires)
		}
		switch strings.ToLower(c.SameSite) {
		case "strict":
			p.SameSite = network.CookieSameSiteStrict
		case "lax":
			p.SameSite = network.CookieSameSiteLax
		case "none":
			p.SameSite = network.CookieSameSiteNone
		}
		ps = append(ps, p)
	}
	return ps
}

// stateCookies turns the browser's cookies into the state's.
func stateCookies(cs []*network.Cookie) []stateCookie {
	out := make([]stateCookie, 0, len(cs))
	for _, c := range cs {
		sc := stateCookie{
			Name: c.Name, Value: c.Value, Domain: c.Domain, Path: c.Path, Expires: c.Expires,
			HTTPOnly: c.HTTPOnly, Secure: c.Secure, SameSite: "Lax",
		}
		if c.Session || c.Expires <= 0 {
			sc.Expires = -1
		}
		switch c.SameSite {
		case network.CookieSameSiteStrict:
			sc.SameSite = "Strict"
		case network.CookieSameSiteNone:
			sc.SameSite = "None"
		}
		out = append(out, sc)
	}
	return out
}

// withOrigins returns s with the local storage of the origins read at the end
// replacing those it had; origins not read keep theirs (no page of theirs ran).
func (s storageState) withOrigins(read []stateOrigin) storageState {
	out := storageState{Cookies: s.Cookies}
	for _, o := range s.Origins {
		if !slices.ContainsFunc(read, func(r stateOrigin) bool { return r.Origin == o.Origin }) {
			out.Origins = append(out.Origins, o)
		}
	}
	for _, r := range read {
		if len(r.LocalStorage) > 0 {
			out.Origins = append(out.Origins, r)
		}
	}
	slices.SortFunc(out.Origins, func(a, b stateOrigin) int { return strings.Compare(a.Origin, b.Origin) })
	return out
}

// marshal encodes s, with empty lists rather than null.
func (s storageState) marshal() ([]byte, error) {
	if s.Cookies == nil {
		s.Cookies = []stateCookie{}
	}
	if s.Origins == nil {
		s.Origins = []stateOrigin{}
	}
	for i := range s.Origins {
		if s.Origins[i].LocalStorage == nil {
			s.Origins[i].LocalStorage = []stateStorage{}
		}
	}
	return json.Marshal(s)
}
