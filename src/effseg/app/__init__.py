"""Applications over the library: `effseg demo` and its report, the street demo, and the
`effseg serve` web page."""
