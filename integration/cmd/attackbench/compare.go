package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
)

// loadSummary reads a -json output (several files merge: later rows and
// non-null fields win), e.g. a run split with -only.
func loadSummary(paths string) (Summary, error) {
	var out Summary
	for _, p := range strings.Split(paths, ",") {
		b, err := os.ReadFile(strings.TrimSpace(p))
		if err != nil {
			return out, err
		}
		var s Summary
		if err := json.Unmarshal(b, &s); err != nil {
			return out, fmt.Errorf("%s: %w", p, err)
		}
		ov, sv := reflect.ValueOf(&out).Elem(), reflect.ValueOf(s)
		for i := range sv.NumField() {
			if f := sv.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
				ov.Field(i).Set(f)
			}
		}
		for _, r := range s.Rows {
			replaced := false
			for j := range out.Rows {
				if out.Rows[j].Attack == r.Attack {
					out.Rows[j], replaced = r, true
				}
			}
			if !replaced {
				out.Rows = append(out.Rows, r)
			}
		}
	}
	return out, nil
}

// printCompare writes the before/after tables in Markdown (docs/security.md).
func printCompare(w io.Writer, before, after Summary) {
	fmt.Fprintln(w, "| metric (-json field) | before | after |")
	fmt.Fprintln(w, "|---|---|---|")
	bv, av, t := reflect.ValueOf(before), reflect.ValueOf(after), reflect.TypeOf(before)
	for i := range t.NumField() {
		if t.Field(i).Type.Kind() != reflect.Pointer {
			continue
		}
		name := strings.Split(t.Field(i).Tag.Get("json"), ",")[0]
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", name, show(bv.Field(i)), show(av.Field(i)))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| attack | attacker sent: before; after | before: victim sent / lost | before: legitimate use | after: victim sent / lost | after: legitimate use | RSS after attack, MB: before → after |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, a := range attacks {
		b, okb := rowOf(before, a.name)
		f, oka := rowOf(after, a.name)
		if !okb && !oka {
			continue
		}
		fmt.Fprintf(w, "| %s | %d B, %d pkts; %d B, %d pkts | %s | %s | %s | %s | %.0f → %.0f |\n", a.name,
			b.AttackerBytes, b.AttackerPkts, f.AttackerBytes, f.AttackerPkts, cell(b, false), cell(b, true), cell(f, false), cell(f, true),
			float64(b.MemAfterKB)/1024, float64(f.MemAfterKB)/1024)
	}
}

func rowOf(s Summary, name string) (Row, bool) {
	for _, r := range s.Rows {
		if r.Attack == name {
			return r, true
		}
	}
	return Row{}, false
}

func cell(r Row, legit bool) string {
	v := r.VictimSent
	if legit {
		v = r.Legit
	}
	if r.Err != "" {
		v = "error: " + r.Err
	}
	return strings.ReplaceAll(v, "|", "/")
}

func show(v reflect.Value) string {
	if v.IsNil() {
		return "—"
	}
	switch x := v.Elem().Interface().(type) {
	case float64:
		if x >= 100 {
			return fmt.Sprintf("%.0f", x)
		}
		return fmt.Sprintf("%.3g", x)
	default:
		return fmt.Sprint(x)
	}
}
