//! Typed instructions built from parser [`Node`](super::Node)s, with every flag validated.
