(module
  (func (export "other")))
