;; Declares 4 GiB of initial memory (65536 pages) that it does not export,
;; and returns.
(module
  (memory 65536)
  (func (export "_start")))
