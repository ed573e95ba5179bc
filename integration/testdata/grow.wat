;; Grows its linear memory at start and on every line of stdin: 1 MiB
;; at a time, touching every 4 KiB page it gets, until memory.grow fails
;; (-1). Then it writes "memory N MiB" (its whole memory) and waits for
;; the next line; it returns 0 at the end of stdin.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "memory ")
  ;; 0: iovec, 8: count, 16..48: input, 64..: output line

  (func $grow_all (local $p i32) (local $end i32)
    (block $refused
      (loop $more
        (local.set $p (memory.grow (i32.const 16)))
        (br_if $refused (i32.eq (local.get $p) (i32.const -1)))
        (local.set $p (i32.shl (local.get $p) (i32.const 16)))
        (local.set $end (i32.add (local.get $p) (i32.const 1048576)))
        (loop $touch
          (i32.store8 (local.get $p) (i32.const 1))
          (local.set $p (i32.add (local.get $p) (i32.const 4096)))
          (br_if $touch (i32.lt_u (local.get $p) (local.get $end))))
        (br $more))))

  ;; writes "memory N MiB\n" with N = memory.size / 16
  (func $report (local $n i32) (local $len i32) (local $digits i32) (local $i i32)
    (local.set $n (i32.shr_u (memory.size) (i32.const 4)))
    ;; digits, backwards, at 100..
    (loop $digit
      (i32.store8 (i32.add (i32.const 100) (local.get $digits))
        (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $n) (i32.const 0))))
    ;; copied forwards after "memory " (71..)
    (loop $copy
      (i32.store8 (i32.add (i32.const 71) (local.get $i))
        (i32.load8_u (i32.sub (i32.add (i32.const 99) (local.get $digits)) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $copy (i32.lt_u (local.get $i) (local.get $digits))))
    (local.set $len (i32.add (i32.const 71) (local.get $digits)))
    (i32.store8 (local.get $len) (i32.const 32))
    (i32.store8 (i32.add (local.get $len) (i32.const 1)) (i32.const 77))
    (i32.store8 (i32.add (local.get $len) (i32.const 2)) (i32.const 105))
    (i32.store8 (i32.add (local.get $len) (i32.const 3)) (i32.const 66))
    (i32.store8 (i32.add (local.get $len) (i32.const 4)) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.sub (i32.add (local.get $len) (i32.const 5)) (i32.const 64)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func (export "_start")
    (call $grow_all)
    (call $report)
    (loop $line
      (i32.store (i32.const 0) (i32.const 16))
      (i32.store (i32.const 4) (i32.const 32))
      (if (i32.ne (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)) (i32.const 0))
        (then (return)))
      (if (i32.eqz (i32.load (i32.const 8)))
        (then (return)))
      (call $grow_all)
      (call $report)
      (br $line))))
