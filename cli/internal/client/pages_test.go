package client

import (
	"errors"
	"slices"
	"testing"
)

func TestPages(t *testing.T) {
	t.Parallel()
	pages := map[string]struct {
		items []int
		next  string
	}{"": {[]int{1, 2}, "b"}, "b": {[]int{3}, "c"}, "c": {[]int{4}, ""}}
	fetch := func(token string) ([]int, string, error) { return pages[token].items, pages[token].next, nil }

	got, next, err := Pages(false, fetch)
	if err != nil || !slices.Equal(got, []int{1, 2}) || next != "b" {
		t.Errorf("one page: %v, %q, %v", got, next, err)
	}
	got, next, err = Pages(true, fetch)
	if err != nil || !slices.Equal(got, []int{1, 2, 3, 4}) || next != "" {
		t.Errorf("all pages: %v, %q, %v", got, next, err)
	}
	loop := func(string) ([]int, string, error) { return []int{0}, "same", nil }
	if _, _, err := Pages(true, loop); err == nil {
		t.Error("a repeated page token did not stop the loop")
	}
	boom := errors.New("boom")
	if _, _, err := Pages(true, func(string) ([]int, string, error) { return nil, "", boom }); !errors.Is(err, boom) {
		t.Errorf("error: %v", err)
	}
}
