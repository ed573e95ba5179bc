package wasmmod

// markEvery is how many elements of a table lie between two marks.
const markEvery = 16

// table is a vector read from a section and kept as it is encoded, instead
// of decoded into a slice of Go values that would take several times its
// size. Its element i is found again by skipping from the mark before it,
// over at most markEvery-1 elements, each of which can be skipped in
// constant time.
type table struct {
	body  []byte   // the section's body, validated
	marks []uint32 // marks[k] is the position in body of element k*markEvery
	n     uint32   // the number of elements
}

// mark records d's position as that of element i, before it is decoded.
func (t *table) mark(i uint32, d *decoder) {
	if i%markEvery == 0 {
		t.marks = append(t.marks, uint32(d.pos))
	}
}

// seek returns a decoder at element i (< t.n), found by calling skip on
// the elements before it from the nearest mark.
func (t *table) seek(i uint32, skip func(*decoder)) decoder {
	d := decoder{b: t.body, pos: int(t.marks[i/markEvery])}
	for range i % markEvery {
		skip(&d)
	}
	return d
}

// skipU32 skips an integer of a validated section.
func skipU32(d *decoder) {
	_, n, _ := decodeU32(d.b[d.pos:])
	d.pos += n
}

// skipFuncType skips a function type of a validated type section: since
// value types take one byte each, in constant time.
func skipFuncType(d *decoder) {
	readFuncType(d)
}

// readFuncType reads a function type of a validated type section,
// returning its parameter and result types as encoded (one byte each).
func readFuncType(d *decoder) (params, results []byte) {
	d.pos++ // the form, 0x60
	n, _ := d.u32()
	params, _ = d.bytes(n)
	n, _ = d.u32()
	results, _ = d.bytes(n)
	return params, results
}
