package wire

import (
	"regexp"
	"strings"
	"unicode"
)

// MaxMessage is the length, in runes, past which an upstream reason is cut.
const MaxMessage = 200

// urlPattern matches absolute URLs inside an upstream reason. It is
// compiled once and only read afterwards.
var urlPattern = regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.\-]*://[^\s"'<>]+`)

// Clean turns an upstream-provided reason into text that is safe to put in
// an error: every secret is replaced by "[redacted]", URLs by "[url]",
// control characters and runs of white space by one space, invalid UTF-8 is
// dropped, and the result is cut to MaxMessage runes (marked with "...").
func Clean(s string, secrets ...string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	s = strings.ToValidUTF8(s, "")
	s = urlPattern.ReplaceAllString(s, "[url]")
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
	if r := []rune(s); len(r) > MaxMessage {
		s = string(r[:MaxMessage]) + "..."
	}
	return s
}
