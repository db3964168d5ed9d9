package bench

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// subBucketBits sets a histogram's precision: each power of two above 2^subBucketBits
// ns is cut into 2^subBucketBits equal buckets, so that a recorded latency is known to
// within 1/1024 of its value (about HdrHistogram's three significant digits), and
// latencies below 1,024 ns exactly.
const subBucketBits = 10

// histogram is a log-linear latency histogram in the manner of HdrHistogram: constant
// relative precision, a fixed cost per sample (no slice of samples to sort), and
// histograms of several workers add up. The zero value is empty and ready to use; it
// is not safe for concurrent use, so each closed-loop worker records into its own.
type histogram struct {
	counts   []uint64 // by bucket index; grown to the largest index recorded
	n        uint64
	sum      time.Duration
	min, max time.Duration
}

// bucketOf is the index of the bucket that holds v ns. Below 2^(subBucketBits+1) the
// index is v itself; above, each power of two adds 2^subBucketBits buckets.
func bucketOf(v uint64) int {
	shift := max(bits.Len64(v)-subBucketBits-1, 0)
	return shift<<subBucketBits + int(v>>shift)
}

// bucketHigh is the largest value in bucket i (HdrHistogram's "highest equivalent
// value"), so that a quantile is never understated.
func bucketHigh(i int) uint64 {
	shift := max(i>>subBucketBits-1, 0)
	low := uint64(i-shift<<subBucketBits) << shift
	return low + 1<<shift - 1
}

// record adds one latency.
func (h *histogram) record(d time.Duration) {
	d = max(d, 0)
	i := bucketOf(uint64(d))
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]uint64, i+1-len(h.counts))...)
	}
	h.counts[i]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	h.max = max(h.max, d)
	h.n++
	h.sum += d
}

// merge adds o's samples to h.
func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.counts = append(h.counts, make([]uint64, len(o.counts)-len(h.counts))...)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the q-quantile (nearest rank) to within the bucket's precision,
// rounded up to the bucket's highest value and capped at the largest sample.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	// The epsilon keeps 0.9 × 100 (90.00000000000001 in floating point) at rank 90.
	rank := max(uint64(math.Ceil(q*float64(h.n)-1e-9)), 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(bucketHigh(i)), h.max)
		}
	}
	return h.max
}

// mean is the exact mean of the samples.
func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// TestHistogram checks the quantiles against the exact nearest rank of the samples:
// never below it, and above it by at most the bucket's width (1/1024 of the value).
// It runs only when asked (make bench runs no tests): go test -run Histogram.
func TestHistogram(t *testing.T) {
	for _, v := range []uint64{0, 1, 1023, 1024, 2047, 2048, 2049, 4095, 4096, 1 << 40, 1<<40 + 12345} {
		i := bucketOf(v)
		if hi := bucketHigh(i); hi < v || (i > 0 && bucketHigh(i-1) >= v) {
			t.Errorf("value %d: bucket %d ends at %d, the one before at %d", v, i, hi, bucketHigh(i-1))
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	var h, part histogram
	var all []time.Duration
	for i := range 100000 {
		// Log-normal around 500 µs, with a long tail.
		d := time.Duration(math.Exp(r.NormFloat64()*0.8) * float64(500*time.Microsecond))
		all = append(all, d)
		if i%2 == 0 {
			h.record(d)
		} else {
			part.record(d)
		}
	}
	h.merge(&part)
	slices.Sort(all)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := max(int(math.Ceil(q*float64(len(all))-1e-9)), 1)
		want := all[rank-1]
		got := h.quantile(q)
		if got < want || float64(got-want) > float64(want)/1024+1 {
			t.Errorf("q%v: got %v, want %v (within 1/1024)", q, got, want)
		}
	}
	if h.n != uint64(len(all)) || h.min != all[0] || h.max != all[len(all)-1] {
		t.Errorf("n %d min %v max %v, want %d %v %v", h.n, h.min, h.max, len(all), all[0], all[len(all)-1])
	}
}
