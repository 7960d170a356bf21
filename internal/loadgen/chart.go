package loadgen

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"strings"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// ChartSeries is one latency distribution to draw.
type ChartSeries struct {
	Name      string                  // legend text
	Histogram *hdrhistogram.Histogram // latencies in nanoseconds; nil or empty draws no line
}

// Chart geometry.
const (
	chartW, chartH            = 800, 480
	padL, padR, padT, padB    = 80, 30, 50, 60
	chartNines                = 4   // the x axis runs to 99.99%
	chartPoints               = 400 // samples along the x axis
	chartPlotW                = chartW - padL - padR
	chartPlotH                = chartH - padT - padB
	chartFont                 = "font-family=\"sans-serif\" font-size=\"12\""
	chartAxisColor, chartGrid = "#333", "#ddd"
)

var chartColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

// WriteChart writes an SVG chart of latency against percentile: the x axis
// is logarithmic in 1/(1-p), marked at 0, 90, 99, 99.9 and 99.99%, the y axis
// linear in latency from 0, so the tail is as visible as the median. The
// title may have a second line after a "\n".
func WriteChart(w io.Writer, title string, series ...ChartSeries) error {
	bw := bufio.NewWriter(w)
	// The y range covers every series up to 99.99%.
	var top float64
	for _, s := range series {
		if s.Histogram != nil && s.Histogram.TotalCount() > 0 {
			top = max(top, float64(s.Histogram.ValueAtPercentile(99.99)))
		}
	}
	unit, div := chartUnit(top)
	yMax := niceCeil(top / div)
	if yMax == 0 {
		yMax = 1
	}
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n", chartW, chartH, chartW, chartH)
	fmt.Fprintf(bw, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	// The title's first line is bold; further lines (split at "\n") follow.
	for i, l := range strings.Split(title, "\n") {
		if i == 0 {
			fmt.Fprintf(bw, `<text x="%d" y="22" font-family="sans-serif" font-size="14" font-weight="bold">%s</text>`+"\n", padL, html.EscapeString(l))
		} else {
			fmt.Fprintf(bw, `<text x="%d" y="%d" %s>%s</text>`+"\n", padL, 22+16*i, chartFont, html.EscapeString(l))
		}
	}

	// Grid and axes.
	xAt := func(nines float64) float64 { return padL + nines/chartNines*chartPlotW }
	yAt := func(v float64) float64 { return padT + chartPlotH - v/yMax*chartPlotH }
	for n, label := range []string{"0%", "90%", "99%", "99.9%", "99.99%"} {
		x := xAt(float64(n))
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x, padT, x, padT+chartPlotH, chartGrid)
		fmt.Fprintf(bw, `<text x="%.1f" y="%d" %s text-anchor="middle">%s</text>`+"\n", x, padT+chartPlotH+18, chartFont, label)
	}
	const yTicks = 5
	for i := 0; i <= yTicks; i++ {
		v := yMax * float64(i) / yTicks
		y := yAt(v)
		fmt.Fprintf(bw, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", padL, y, padL+chartPlotW, y, chartGrid)
		fmt.Fprintf(bw, `<text x="%d" y="%.1f" %s text-anchor="end">%s</text>`+"\n", padL-8, y+4, chartFont, trimFloat(v))
	}
	fmt.Fprintf(bw, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="%s"/>`+"\n", padL, padT, chartPlotW, chartPlotH, chartAxisColor)
	fmt.Fprintf(bw, `<text x="%d" y="%d" %s text-anchor="middle">percentile</text>`+"\n", padL+chartPlotW/2, chartH-16, chartFont)
	fmt.Fprintf(bw, `<text x="18" y="%d" %s text-anchor="middle" transform="rotate(-90 18 %d)">latency (%s)</text>`+"\n", padT+chartPlotH/2, chartFont, padT+chartPlotH/2, unit)

	// One polyline per series, and its legend entry.
	for i, s := range series {
		color := chartColors[i%len(chartColors)]
		if s.Histogram != nil && s.Histogram.TotalCount() > 0 {
			fmt.Fprintf(bw, `<polyline fill="none" stroke="%s" stroke-width="2" points="`, color)
			for k := 0; k <= chartPoints; k++ {
				nines := float64(k) / chartPoints * chartNines
				p := 100 * (1 - math.Pow(10, -nines))
				v := math.Min(float64(s.Histogram.ValueAtPercentile(p))/div, yMax)
				if k > 0 {
					bw.WriteByte(' ')
				}
				fmt.Fprintf(bw, "%.1f,%.1f", xAt(nines), yAt(v))
			}
			fmt.Fprintf(bw, `"/>`+"\n")
		}
		ly := padT + 16 + 18*i
		fmt.Fprintf(bw, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", padL+12, ly-4, padL+32, ly-4, color)
		fmt.Fprintf(bw, `<text x="%d" y="%d" %s>%s</text>`+"\n", padL+38, ly, chartFont, html.EscapeString(s.Name))
	}
	fmt.Fprintf(bw, "</svg>\n")
	return bw.Flush()
}

// chartUnit picks the y axis unit for a largest value in nanoseconds.
func chartUnit(ns float64) (string, float64) {
	switch {
	case ns >= 2e9:
		return "s", 1e9
	case ns >= 2e6:
		return "ms", 1e6
	default:
		return "µs", 1e3
	}
}

// niceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 0
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// trimFloat formats a tick value without needless decimals.
func trimFloat(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%g", math.Round(v*1000)/1000)
}
