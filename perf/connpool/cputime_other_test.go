//go:build !unix

package connpool

import "time"

func processCPU() (time.Duration, bool) { return 0, false }
