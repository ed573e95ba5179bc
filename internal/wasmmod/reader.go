package wasmmod

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// The section ids of the binary format.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13 // exception handling: between memory and global
)

// sectionName returns the name of a section id, as used in messages.
func sectionName(id byte) string {
	switch id {
	case secCustom:
		return "custom"
	case secType:
		return "type"
	case secImport:
		return "import"
	case secFunction:
		return "function"
	case secTable:
		return "table"
	case secMemory:
		return "memory"
	case secGlobal:
		return "global"
	case secExport:
		return "export"
	case secStart:
		return "start"
	case secElement:
		return "element"
	case secCode:
		return "code"
	case secData:
		return "data"
	case secDataCount:
		return "data count"
	case secTag:
		return "tag"
	}
	return "unknown"
}

// sectionRank returns the place of a non-custom section up to the export
// section in the order the binary format requires, which is that of their
// ids but for the tag section; ok is false for the sections after the
// export section and for unknown ids. The rank of no section (id 0) is 0.
func sectionRank(id byte) (rank int, ok bool) {
	switch {
	case id >= secType && id <= secExport:
		return 2 * int(id), true
	case id == secTag:
		return 2*secMemory + 1, true
	}
	return 0, false
}

// ReadExports reads a binary module from r and returns its exported
// functions.
//
// It reads r sequentially and no further than the end of the export section
// (or the first section that comes after it, if the module has none): it
// decodes the type, import, function, memory and export sections, skips
// custom sections and the table, global and tag sections, and reads at most
// MaxSize bytes in all. It reads section headers a byte at a time (unless r
// is an io.ByteReader) and section bodies whole; a caller reading from a file
// may give it a bufio.Reader, at the price of reading ahead by the size of
// its buffer.
//
// It returns a *FormatError if r does not hold a binary module, or if the
// sections it reads are malformed: out of order or duplicated; truncated;
// with a declared size that does not match their contents; with an integer
// encoded in too many bytes, a count or length larger than what is left of
// the section, an index out of range (a function's or import's type, an
// exported function), an unknown value type, import or export kind, a name
// that is not UTF-8 or two exports of the same name. An error reading r is
// returned wrapped.
func ReadExports(r io.Reader) (*Exports, error) {
	rd := &reader{r: r}
	rd.br, _ = r.(io.ByteReader)
	if err := rd.header(); err != nil {
		return nil, err
	}
	e := &Exports{}
	var last byte // the id of the last section read but custom ones
	for {
		rd.section = ""
		start := rd.off
		id, err := rd.readByte()
		if err == io.EOF {
			return e, nil // the module ends here, at a section's end
		}
		if err != nil {
			return nil, err
		}
		rd.section = sectionName(id)
		if stop, err := checkOrder(id, last); stop || err != nil {
			if err != nil {
				return nil, &FormatError{Section: rd.section, Offset: start, Err: err}
			}
			return e, nil // past the export section: nothing more to read
		}
		if id != secCustom {
			last = id
		}
		size, err := rd.u32()
		if err != nil {
			return nil, err
		}
		if err := e.readSection(rd, id, size); err != nil {
			return nil, err
		}
		if id == secExport {
			return e, nil
		}
	}
}

// checkOrder checks that a section of id may follow the section of id last
// (0 for none), and says whether ReadExports stops at it: at the first
// section that comes after the export section.
func checkOrder(id, last byte) (stop bool, err error) {
	if id == secCustom {
		return false, nil // anywhere
	}
	if id > secTag {
		return false, fmt.Errorf("section id %d is not defined by the binary format", id)
	}
	rank, ok := sectionRank(id)
	if !ok {
		return true, nil
	}
	lastRank, _ := sectionRank(last)
	switch {
	case rank == lastRank:
		return false, errors.New("duplicate section")
	case rank < lastRank:
		return false, fmt.Errorf("out of order: after the %s section", sectionName(last))
	}
	return false, nil
}

// readSection reads the body of a section of id and size: it decodes the
// sections e keeps, and skips the others.
func (e *Exports) readSection(rd *reader, id byte, size uint32) error {
	if id != secType && id != secImport && id != secFunction && id != secMemory && id != secExport {
		return rd.skip(size)
	}
	if size > MaxSectionRead {
		// Skipped first, so that a module too large or truncated is
		// invalid whatever its sizes.
		off := rd.off
		if err := rd.skip(size); err != nil {
			return err
		}
		return &FormatError{Section: rd.section, Offset: off, Err: fmt.Errorf("%d bytes, more than the %d read before a compile: %w", size, MaxSectionRead, ErrUnsupported)}
	}
	base := rd.off
	body, err := rd.body(size)
	if err != nil {
		return err
	}
	d := &decoder{b: body}
	switch id {
	case secType:
		err = e.decodeTypes(d)
	case secImport:
		err = e.decodeImports(d)
	case secFunction:
		err = e.decodeFunctions(d)
	case secMemory:
		err = e.decodeMemories(d)
	case secExport:
		err = e.decodeExports(d)
	}
	if err == nil && d.left() > 0 {
		d.at = d.pos
		err = fmt.Errorf("%s left over after the contents of a section of %s", plural(d.left(), "byte"), plural(int(size), "byte"))
	}
	if err != nil {
		return &FormatError{Section: rd.section, Offset: base + int64(d.at), Err: err}
	}
	return nil
}

// MaxSectionRead bounds each section ReadExports decodes, and so what it
// holds: a larger one is left to the compiler (ErrUnsupported). Real
// modules' are far smaller (the 30 MB Yosys module's largest, its function
// section, is under 100 KB); a hostile module's export or type section
// could otherwise make the shim hold hundreds of megabytes.
const MaxSectionRead = 1 << 20

// wasmMagic starts every binary module.
const wasmMagic = "\x00asm"

// reader reads a module from an io.Reader, counting the bytes it consumes to
// place errors and to read no more than MaxSize.
type reader struct {
	r       io.Reader
	br      io.ByteReader // r, if it is one
	off     int64         // the number of bytes read from r
	section string        // the name of the section being read, for errors
	one     [1]byte       // readByte's buffer
}

// header reads and checks the module's header: the magic number and the
// version.
func (r *reader) header() error {
	var h [8]byte
	n, err := io.ReadFull(r.r, h[:])
	r.off += int64(n)
	switch {
	case !bytes.HasPrefix(h[:n], []byte(wasmMagic[:min(n, 4)])):
		return &FormatError{Err: errors.New("not a WebAssembly binary module: no \\0asm magic number")}
	case n == 0 && err == io.EOF:
		return &FormatError{Err: fmt.Errorf("not a WebAssembly binary module: empty: %w", io.ErrUnexpectedEOF)}
	case err == io.ErrUnexpectedEOF:
		return &FormatError{Offset: r.off, Err: fmt.Errorf("not a WebAssembly binary module: header cut after %d bytes: %w", n, err)}
	case err != nil:
		return r.ioError(err)
	}
	switch v := binary.LittleEndian.Uint32(h[4:]); v {
	case 1:
		return nil
	case 0x1000d:
		return &FormatError{Offset: 4, Err: errors.New("not a WebAssembly binary module: a component (version 0x1000d), not a core module")}
	default:
		return &FormatError{Offset: 4, Err: fmt.Errorf("not a WebAssembly binary module: version %#x, not 1", v)}
	}
}

// ioError wraps an error reading r.
func (r *reader) ioError(err error) error {
	return fmt.Errorf("read WebAssembly module at byte %d: %w", r.off, err)
}

// tooLarge returns the error for a read of n more bytes past MaxSize.
func (r *reader) tooLarge(n uint32) error {
	return &FormatError{Section: r.section, Offset: r.off, Err: fmt.Errorf("%d more bytes would make the module larger than %d bytes", n, MaxSize)}
}

// truncated returns the error for a module that ends within a section.
func (r *reader) truncated(what string) error {
	return &FormatError{Section: r.section, Offset: r.off, Err: fmt.Errorf("module ends within the %s: %w", what, io.ErrUnexpectedEOF)}
}

// readByte reads a byte. At the end of r it returns io.EOF.
func (r *reader) readByte() (byte, error) {
	if r.off >= MaxSize {
		return 0, r.tooLarge(1)
	}
	var b byte
	var err error
	if r.br != nil {
		b, err = r.br.ReadByte()
	} else {
		_, err = io.ReadFull(r.r, r.one[:])
		b = r.one[0]
	}
	if err == io.EOF {
		return 0, io.EOF
	}
	if err != nil {
		return 0, r.ioError(err)
	}
	r.off++
	return b, nil
}

// u32 reads the size of a section: an unsigned LEB128 integer of 32 bits.
func (r *reader) u32() (uint32, error) {
	var buf [5]byte
	n := 0
	for {
		b, err := r.readByte()
		if err == io.EOF {
			return 0, r.truncated("section size")
		}
		if err != nil {
			return 0, err
		}
		buf[n] = b
		n++
		if b&0x80 == 0 || n == len(buf) {
			break
		}
	}
	v, _, err := decodeU32(buf[:n])
	if err != nil {
		return 0, &FormatError{Section: r.section, Offset: r.off - int64(n), Err: fmt.Errorf("section size: %w", err)}
	}
	return v, nil
}

// firstRead is how much body allocates before it has read anything: what
// a section declares is only believed as its bytes arrive.
const firstRead = 16 << 10

// body reads the body of a section of the given size.
func (r *reader) body(size uint32) ([]byte, error) {
	if int64(size) > MaxSize-r.off {
		return nil, r.tooLarge(size)
	}
	n := int(size)
	buf := make([]byte, 0, min(n, firstRead))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), len(buf)))
		}
		got, err := io.ReadFull(r.r, buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+got]
		r.off += int64(got)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, r.truncated(fmt.Sprintf("section's %d bytes, after %d", size, len(buf)))
		}
		if err != nil {
			return nil, r.ioError(err)
		}
	}
	return buf, nil
}

// skip reads and discards the body of a section of the given size.
func (r *reader) skip(size uint32) error {
	if int64(size) > MaxSize-r.off {
		return r.tooLarge(size)
	}
	got, err := io.CopyN(io.Discard, r.r, int64(size))
	r.off += got
	if err == io.EOF {
		return r.truncated(fmt.Sprintf("section's %d bytes, after %d", size, got))
	}
	if err != nil {
		return r.ioError(err)
	}
	return nil
}
