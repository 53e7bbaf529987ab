package monitor

import (
	"bufio"
	"bytes"
	"cmp"
	"io"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
)

// maxStacks caps the distinct goroutine stacks kept per sample: the ones
// with the most goroutines. A leaking stack soon ranks among them; a stack
// cut from the oldest sample counts as 0 there, which can only overstate
// its growth by the count of the 64th-largest stack.
const maxStacks = 64

// stack is one normalised goroutine stack, interned by the LeakDetector so
// that its samples share one copy.
type stack struct {
	key   string   // funcs joined by "\n"
	funcs []string // innermost first, function names only
	refs  int      // samples referring to it; guarded by LeakDetector.mu
}

// stackCount is the number of goroutines with one stack in one sample.
type stackCount struct {
	st *stack
	n  int64
}

// parsedStack is a stack of a goroutine profile, before interning.
type parsedStack struct {
	key   string
	funcs []string
	n     int64
}

// writeGoroutineProfile writes the goroutine profile in its debug=1 text
// form: stacks grouped with their counts, runtime frames at the top already
// hidden.
func writeGoroutineProfile(w io.Writer) error {
	return pprof.Lookup("goroutine").WriteTo(w, 1)
}

// parseGoroutineProfile reads a debug=1 goroutine profile:
//
//	goroutine profile: total 4
//	3 @ 0x47db6e 0x4158ee 0x4d9cb3 0x484181
//	#	0x4d9cb2	main.leaky+0x32		/tmp/main.go:9
//	# labels: {"k":"v"}
//
// and returns its stacks normalised to function names (no offsets, files,
// lines or labels), merged when equal, the top maxStacks by count.
func parseGoroutineProfile(text []byte) []parsedStack {
	byKey := make(map[string]*parsedStack)
	var (
		n     int64
		funcs []string
		open  bool
	)
	flush := func() {
		if open && len(funcs) > 0 {
			key := strings.Join(funcs, "\n")
			if p := byKey[key]; p != nil {
				p.n += n
			} else {
				byKey[key] = &parsedStack{key: key, funcs: funcs, n: n}
			}
		}
		open, funcs = false, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "#"):
			if !open || strings.HasPrefix(line, "# labels:") {
				continue
			}
			f := strings.Fields(line)
			name := "?"
			if len(f) >= 3 {
				name = f[2]
				if i := strings.LastIndex(name, "+0x"); i > 0 {
					name = name[:i]
				}
			}
			funcs = append(funcs, name)
		default: // "3 @ 0x… 0x…" opens a record; the header line does not parse
			flush()
			count, rest, ok := strings.Cut(line, " @ ")
			if c, err := strconv.ParseInt(count, 10, 64); ok && err == nil && rest != "" {
				n, open = c, true
			}
		}
	}
	flush()

	out := make([]parsedStack, 0, len(byKey))
	for _, p := range byKey {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b parsedStack) int {
		return cmp.Or(cmp.Compare(b.n, a.n), strings.Compare(a.key, b.key))
	})
	return out[:min(len(out), maxStacks)]
}
