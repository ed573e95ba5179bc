package wasmmod

import (
	"fmt"
	"unicode/utf8"
)

// malformed is an error about the encoding of a value, as a constant.
type malformed string

// Error returns the message.
func (m malformed) Error() string { return string(m) }

// The errors of the decoder that need no context.
const (
	errEnd     malformed = "contents run past the end of the section"
	errLEBLong malformed = "integer encoding longer than 5 bytes"
	errLEBBig  malformed = "integer too large for 32 bits"
)

// decodeU32 decodes the unsigned LEB128 integer of at most 32 bits at the
// start of b, and returns it and its length in bytes. It returns errEnd if
// b ends within the integer.
func decodeU32(b []byte) (uint32, int, error) {
	var v uint32
	for i := 0; i < 5; i++ {
		if i == len(b) {
			return 0, 0, errEnd
		}
		c := b[i]
		if i == 4 {
			// The fifth byte holds bits 28 to 31: it ends the integer
			// and leaves its three unused bits zero.
			if c&0x80 != 0 {
				return 0, 0, errLEBLong
			}
			if c&0x70 != 0 {
				return 0, 0, errLEBBig
			}
		}
		v |= uint32(c&0x7F) << (7 * i)
		if c&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	panic("unreachable")
}

// decoder reads the values encoded in a section's body, held in memory.
type decoder struct {
	b   []byte // the section's body
	pos int    // the position in b of the next value
	at  int    // the position in b of the value read last, where errors are reported
}

// left returns the number of bytes left to read in the section.
func (d *decoder) left() int { return len(d.b) - d.pos }

// byte reads one byte.
func (d *decoder) byte() (byte, error) {
	d.at = d.pos
	if d.pos == len(d.b) {
		return 0, errEnd
	}
	d.pos++
	return d.b[d.at], nil
}

// u32 reads an unsigned LEB128 integer of at most 32 bits.
func (d *decoder) u32() (uint32, error) {
	d.at = d.pos
	v, n, err := decodeU32(d.b[d.pos:])
	d.pos += n
	return v, err
}

// bytes reads n bytes, after checking that the section has them.
func (d *decoder) bytes(n uint32) ([]byte, error) {
	d.at = d.pos
	if uint64(n) > uint64(d.left()) {
		return nil, errEnd
	}
	b := d.b[d.pos : d.pos+int(n)]
	d.pos += int(n)
	return b, nil
}

// count reads the length of a vector whose elements take at least minSize
// bytes each, and checks that the rest of the section can hold that many:
// what a caller allocates for them is then bounded by the section's size,
// not by what it declares.
func (d *decoder) count(what string, minSize int) (uint32, error) {
	n, err := d.u32()
	if err != nil {
		return 0, fmt.Errorf("number of %s: %w", what, err)
	}
	if uint64(n)*uint64(minSize) > uint64(d.left()) {
		return 0, fmt.Errorf("%d %s declared in the %d bytes left in the section", n, what, d.left())
	}
	return n, nil
}

// name reads a name: its length, then as many bytes of UTF-8.
func (d *decoder) name() ([]byte, error) {
	n, err := d.u32()
	if err != nil {
		return nil, fmt.Errorf("name length: %w", err)
	}
	at := d.at
	if uint64(n) > uint64(d.left()) {
		return nil, fmt.Errorf("name of %d bytes declared in the %d bytes left in the section", n, d.left())
	}
	b, _ := d.bytes(n)
	d.at = at
	if !utf8.Valid(b) {
		return nil, malformed("name is not valid UTF-8")
	}
	return b, nil
}
