package client

import "fmt"

// Pages reads a paged list: it fetches the first page and, when all is true, every page
// after it, following the next-page tokens, and returns the items and the token of the
// page after the last one read ("" when the list is complete). A server that hands out
// the same page token twice is an error rather than an endless loop.
func Pages[T any](all bool, fetch func(pageToken string) (items []T, next string, err error)) ([]T, string, error) {
	var out []T
	seen := map[string]bool{}
	token := ""
	for {
		items, next, err := fetch(token)
		if err != nil {
			return nil, "", err
		}
		out = append(out, items...)
		if !all || next == "" {
			return out, next, nil
		}
		if seen[next] {
			return nil, "", fmt.Errorf("the server returned the page token %q twice; stopping", next)
		}
		seen[next], token = true, next
	}
}
