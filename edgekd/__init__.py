"""edgekd: distil a compact student from a teacher, export and quantise it, measure it on clean
and perturbed inputs side by side with the teacher, and gate it for CI.

    edgekd build            # the whole pipeline on the embedded digits default
"""

__version__ = "0.1.0"
