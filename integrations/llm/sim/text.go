package sim

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/vega-gateway/vega/integrations/llm"
)

// vocabulary is what simulated answers are made of.
var vocabulary = [...]string{
	"the", "gateway", "model", "answer", "request", "token", "stream", "cache",
	"latency", "server", "client", "simple", "quick", "steady", "careful", "bright",
	"river", "mountain", "garden", "signal", "window", "harbor", "lantern", "meadow",
	"builds", "carries", "finds", "keeps", "measures", "sends", "shapes", "waits",
	"and", "with", "for", "over", "under", "through", "beside", "before",
	"quietly", "often", "again", "today", "clearly", "gently", "always", "soon",
	"a", "every", "some", "each", "this", "that", "one", "many",
	"result", "pattern", "journey", "message", "number", "story", "moment", "idea",
}

// maxQuoted is how many characters of the prompt the answer's header quotes.
const maxQuoted = 40

// compose returns the first limit words of the answer to req.
func compose(req *llm.Request, limit int) string {
	words := strings.Fields(header(req))
	if len(words) >= limit {
		return strings.Join(words[:limit], " ")
	}
	rng := &splitmix{s: seed(req)}
	sentence := 0 // words in the current sentence
	for len(words) < limit {
		w := vocabulary[rng.next()%uint64(len(vocabulary))]
		if sentence == 0 {
			w = strings.ToUpper(w[:1]) + w[1:]
		}
		sentence++
		if sentence >= 5 && rng.next()%4 == 0 {
			w += "."
			sentence = 0
		}
		words = append(words, w)
	}
	return strings.Join(words, " ")
}

// header is the recognisable start of every answer.
func header(req *llm.Request) string {
	q := strings.Join(strings.Fields(lastUserText(req)), " ")
	if utf8.RuneCountInString(q) > maxQuoted {
		q = string([]rune(q)[:maxQuoted]) + "..."
	}
	return `Simulated answer to "` + q + `":`
}

// lastUserText is the prompt, or the last user message (the last message
// if none is from the user).
func lastUserText(req *llm.Request) string {
	if len(req.Messages) == 0 {
		return req.Prompt
	}
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			return req.Messages[i].Content
		}
	}
	return req.Messages[len(req.Messages)-1].Content
}

// seed hashes what determines an answer's text: model, prompt or messages,
// seed, temperature and top_p. The limit and stop sequences are left out
// so that they only cut the same text.
func seed(req *llm.Request) uint64 {
	h := fnv.New64a()
	field := func(s string) {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	number := func(set bool, v uint64) {
		var b [9]byte
		if set {
			b[0] = 1
			binary.LittleEndian.PutUint64(b[1:], v)
		}
		h.Write(b[:])
	}
	field(req.Model)
	if len(req.Messages) == 0 {
		field("prompt")
		field(req.Prompt)
	}
	for _, m := range req.Messages {
		field(m.Role)
		field(m.Content)
	}
	o := req.Options
	number(o.Seed != nil, uint64(deref(o.Seed)))
	number(o.Temperature != nil, math.Float64bits(deref(o.Temperature)))
	number(o.TopP != nil, math.Float64bits(deref(o.TopP)))
	return h.Sum64()
}

func deref[T int64 | float64](p *T) T {
	if p == nil {
		return 0
	}
	return *p
}

// splitmix is the SplitMix64 generator: tiny, and its output is fixed by
// its definition, so answers stay the same across Go releases.
type splitmix struct{ s uint64 }

func (g *splitmix) next() uint64 {
	g.s += 0x9e3779b97f4a7c15
	z := g.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// cutAtStop cuts text before the earliest occurrence of any non-empty stop
// sequence.
func cutAtStop(text string, stop []string) (string, bool) {
	at := -1
	for _, s := range stop {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	if at < 0 {
		return text, false
	}
	return text[:at], true
}

// splitTokens splits text, words separated by spaces, into tokens of one
// word each with the spaces that follow it.
func splitTokens(text string) []string {
	var tokens []string
	for text != "" {
		end := strings.IndexByte(text, ' ')
		if end < 0 {
			return append(tokens, text)
		}
		for end < len(text) && text[end] == ' ' {
			end++
		}
		tokens = append(tokens, text[:end])
		text = text[end:]
	}
	return tokens
}

// promptTokens counts the words of the prompt or of all messages.
func promptTokens(req *llm.Request) int {
	n := len(strings.Fields(req.Prompt))
	for _, m := range req.Messages {
		n += len(strings.Fields(m.Content))
	}
	return n
}
