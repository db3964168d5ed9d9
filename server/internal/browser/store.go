package browser

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/palyra/palyra/gen/dbsqlc"
	browserv1 "github.com/palyra/palyra/gen/go/palyra/browser/v1"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/store"
)

// profileRow is a definition as the browser_profiles table stores it.
type profileRow struct {
	ID, Name, Description, UserAgent, Locale, TimeZone, Proxy string
	Width, Height                                             int32
	// Domains is a JSON array of strings; Labels a JSON object.
	Domains, Labels []byte
}

// toRow converts a normalized definition.
func toRow(spec *browserv1.BrowserProfileSpec) (profileRow, error) {
	domains, err := json.Marshal(spec.GetAllowedDomains())
	if err != nil {
		return profileRow{}, fmt.Errorf("allowed domains: %w", err)
	}
	labels := []byte("{}")
	if len(spec.GetLabels()) > 0 {
		if labels, err = json.Marshal(spec.GetLabels()); err != nil {
			return profileRow{}, fmt.Errorf("labels: %w", err)
		}
	}
	return profileRow{
		Name: spec.GetName(), Description: spec.GetDescription(), UserAgent: spec.GetUserAgent(),
		Locale: spec.GetLocale(), TimeZone: spec.GetTimeZone(), Proxy: spec.GetProxy(),
		Width: int32(spec.GetViewport().GetWidth()), Height: int32(spec.GetViewport().GetHeight()),
		Domains: domains, Labels: labels,
	}, nil
}

// profileOf converts a stored profile; state is its newest state's description.
func profileOf(r dbsqlc.BrowserProfile, state StateInfo) (Profile, error) {
	spec := &browserv1.BrowserProfileSpec{
		Name: r.Name, Description: r.Description, UserAgent: r.UserAgent, Locale: r.Locale, TimeZone: r.TimeZone,
		Proxy: r.Proxy, Viewport: &browserv1.Viewport{Width: uint32(r.ViewportWidth), Height: uint32(r.ViewportHeight)},
	}
	if err := json.Unmarshal(r.AllowedDomains, &spec.AllowedDomains); err != nil {
		return Profile{}, fmt.Errorf("browser profile %s: allowed domains: %w", r.ID, err)
	}
	if err := json.Unmarshal(r.Labels, &spec.Labels); err != nil {
		return Profile{}, fmt.Errorf("browser profile %s: labels: %w", r.ID, err)
	}
	return Profile{
		ID: r.ID, Spec: spec, Revision: r.Revision, State: state,
		CreatedAt: r.CreatedAt.UTC(), CreatedBy: r.CreatedBy, UpdatedAt: r.UpdatedAt.UTC(), UpdatedBy: r.UpdatedBy,
	}, nil
}

// withStates converts stored profiles with their newest states' descriptions.
func withStates(ctx context.Context, q *dbsqlc.Queries, rows ...dbsqlc.BrowserProfile) ([]Profile, error) {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	infos, err := q.BrowserProfileStateInfo(ctx, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]StateInfo, len(infos))
	for _, s := range infos {
		byID[s.ProfileID] = StateInfo{Version: s.Version, SavedAt: s.SavedAt.UTC(), SizeBytes: s.SizeBytes}
	}
	out := make([]Profile, len(rows))
	for i, r := range rows {
		if out[i], err = profileOf(r, byID[r.ID]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// one converts one stored profile with its newest state's description.
func one(ctx context.Context, q *dbsqlc.Queries, row dbsqlc.BrowserProfile, err error) (Profile, error) {
	if err != nil {
		return Profile{}, err
	}
	out, err := withStates(ctx, q, row)
	if err != nil {
		return Profile{}, err
	}
	return out[0], nil
}

// insertProfile stores a new profile.
func insertProfile(ctx context.Context, tx *store.Tx, r profileRow, now time.Time, by string) (Profile, error) {
	row, err := tx.Q().InsertBrowserProfile(ctx, dbsqlc.InsertBrowserProfileParams{
		ID: r.ID, Name: r.Name, Description: r.Description, UserAgent: r.UserAgent, ViewportWidth: r.Width,
		ViewportHeight: r.Height, Locale: r.Locale, TimeZone: r.TimeZone, Proxy: r.Proxy, AllowedDomains: r.Domains,
		Labels: r.Labels, Now: now, By: by,
	})
	return one(ctx, tx.Q(), row, err)
}

// updateProfile stores r as the next revision of profile r.ID.
func updateProfile(ctx context.Context, tx *store.Tx, r profileRow, now time.Time, by string) (Profile, error) {
	row, err := tx.Q().UpdateBrowserProfile(ctx, dbsqlc.UpdateBrowserProfileParams{
		ID: r.ID, Name: r.Name, Description: r.Description, UserAgent: r.UserAgent, ViewportWidth: r.Width,
		ViewportHeight: r.Height, Locale: r.Locale, TimeZone: r.TimeZone, Proxy: r.Proxy, AllowedDomains: r.Domains,
		Labels: r.Labels, Now: now, By: by,
	})
	return one(ctx, tx.Q(), row, err)
}

// getProfile reads the profile ref; NotFound when there is none.
func getProfile(ctx context.Context, q *dbsqlc.Queries, ref Ref) (Profile, error) {
	return readProfile(ctx, q, ref, q.GetBrowserProfileByID, q.GetBrowserProfileByName)
}

// lockProfile reads the profile ref and locks it until tx ends; NotFound when there is
// none.
func lockProfile(ctx context.Context, tx *store.Tx, ref Ref) (Profile, error) {
	q := tx.Q()
	return readProfile(ctx, q, ref, q.LockBrowserProfileByID, q.LockBrowserProfileByName)
}

// readProfile reads the profile ref with the query by its id or by its name.
func readProfile(ctx context.Context, q *dbsqlc.Queries, ref Ref, byID, byName func(context.Context, string) (dbsqlc.BrowserProfile, error)) (Profile, error) {
	read, key := byName, ref.Name
	if ref.ID != "" {
		read, key = byID, ref.ID
	}
	row, err := read(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return Profile{}, errdefs.Wrap(err, errdefs.NotFound, "there is no %s", ref)
	}
	return one(ctx, q, row, err)
}

// listProfiles reads up to limit profiles by name after the name after, and whether
// there may be more.
func listProfiles(ctx context.Context, q *dbsqlc.Queries, after string, limit int) ([]Profile, bool, error) {
	rows, err := q.ListBrowserProfiles(ctx, dbsqlc.ListBrowserProfilesParams{AfterName: after, MaxRows: int32(limit)})
	if err != nil {
		return nil, false, err
	}
	out, err := withStates(ctx, q, rows...)
	return out, len(rows) == limit, err
}

// pageTokenPrefix marks the page tokens of ListBrowserProfiles.
const pageTokenPrefix = "browser_profiles:"

// encodePageToken and decodePageToken carry the name a page of profiles ends with.
func encodePageToken(name string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pageTokenPrefix + name))
}

func decodePageToken(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	name, ok := bytes.CutPrefix(b, []byte(pageTokenPrefix))
	if err != nil || !ok || !nameRE.Match(name) {
		return "", errdefs.InvalidField("page_token", "not a page token of ListBrowserProfiles")
	}
	return string(name), nil
}
