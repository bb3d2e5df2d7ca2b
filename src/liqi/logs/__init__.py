"""Log files and log records: size-bounded rotating output files (:mod:`.rotation`), the
process that writes one from a pipe (:mod:`.writer`, :mod:`.capture`), reading them across
rotations (:mod:`.reading`), folding repeated records (:mod:`.repeats`) and TensorFlow's own
noise (:mod:`.tensorflow_noise`)."""
