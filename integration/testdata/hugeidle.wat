;; Declares 1 GiB of initial memory (16384 pages), not exported, never
;; touches it, and spins.
(module
  (memory 16384)
  (func (export "_start") (loop (br 0))))
