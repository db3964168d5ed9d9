package node

import (
	"strings"
	"testing"
)

const (
	testFP   = "sha256:fabd539369598d55ccae908a97924477f9eca9b3cd0fba7275d7da5a67503870"
	testCode = "Zm9vYmFyYmF6cXV4cXV1eHl6enk"
)

// TestPairingURIParse checks palyra://pair URIs: the good forms, and that anything else
// is refused with a reason and without repeating the code.
func TestPairingURIParse(t *testing.T) {
	t.Parallel()
	good := map[string]PairingURI{
		"palyra://pair?url=https%3A%2F%2Fadmin-host%3A7443&code=" + testCode + "&ca=" + testFP: {
			URL: "https://admin-host:7443", Code: testCode, CAFingerprint: testFP,
		},
		"palyra://pair/?ca=" + testFP + "&code=" + testCode + "&url=https://10.0.0.5:7443/palyra&v=2": {
			URL: "https://10.0.0.5:7443/palyra", Code: testCode, CAFingerprint: testFP,
		},
		"  PALYRA://PAIR?url=https://[::1]:7443&code=" + testCode + "&ca=" + testFP + "\n": {
			URL: "https://[::1]:7443", Code: testCode, CAFingerprint: testFP,
		},
	}
	for in, want := range good {
		got, err := ParsePairingURI(in)
		if err != nil || got != want {
			t.Errorf("ParsePairingURI(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if again, err := ParsePairingURI(got.String()); err != nil || again != want {
			t.Errorf("ParsePairingURI(%q) = %+v, %v; String does not round-trip", got.String(), again, err)
		}
	}
	q := "?url=https://admin-host:7443&code=" + testCode + "&ca=" + testFP
	bad := map[string]string{
		"https scheme":        "https://pair" + q,
		"other scheme":        "palyr://pair" + q,
		"opaque":              "palyra:pair" + q,
		"other host":          "palyra://join" + q,
		"a path":              "palyra://pair/now" + q,
		"user info":           "palyra://me@pair" + q,
		"fragment":            "palyra://pair" + q + "#x",
		"empty":               "",
		"no url":              "palyra://pair?code=" + testCode + "&ca=" + testFP,
		"no code":             "palyra://pair?url=https://admin-host:7443&ca=" + testFP,
		"no ca":               "palyra://pair?url=https://admin-host:7443&code=" + testCode,
		"url twice":           "palyra://pair" + q + "&url=https://evil:7443",
		"http url":            "palyra://pair?url=http://admin-host:7443&code=" + testCode + "&ca=" + testFP,
		"url without host":    "palyra://pair?url=https://&code=" + testCode + "&ca=" + testFP,
		"url with user":       "palyra://pair?url=https://u:p@admin-host&code=" + testCode + "&ca=" + testFP,
		"short code":          "palyra://pair?url=https://admin-host:7443&code=abc&ca=" + testFP,
		"code with bad chars": "palyra://pair?url=https://admin-host:7443&code=" + testCode + "%2F%2F&ca=" + testFP,
		"fingerprint short":   "palyra://pair?url=https://admin-host:7443&code=" + testCode + "&ca=sha256:fabd",
		"fingerprint upper":   "palyra://pair?url=https://admin-host:7443&code=" + testCode + "&ca=" + strings.ToUpper(testFP),
		"fingerprint sha1":    "palyra://pair?url=https://admin-host:7443&code=" + testCode + "&ca=sha1:" + strings.Repeat("a", 40),
		"malformed query":     "palyra://pair?url=%zz&code=" + testCode + "&ca=" + testFP,
	}
	for name, in := range bad {
		_, err := ParsePairingURI(in)
		if err == nil {
			t.Errorf("%s: ParsePairingURI(%q) worked", name, in)
			continue
		}
		if strings.Contains(err.Error(), testCode) {
			t.Errorf("%s: the error repeats the code: %v", name, err)
		}
	}
	for pin, ok := range map[string]bool{"48213907": true, "123456": true, "123456789012": true, "12345": false, "1234567890123": false, "4821390a": false, "": false} {
		if ValidPIN(pin) != ok {
			t.Errorf("ValidPIN(%q) = %v", pin, !ok)
		}
	}
}
