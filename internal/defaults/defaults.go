// Package defaults holds the one helper every package's Config.fill uses
// to apply its defaults (docs/decisions.md D15: zero means the default).
package defaults

// Or sets *p to def when *p is the zero value ("zero means the default").
func Or[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}
