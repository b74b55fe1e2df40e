//! BuildKit-exact Dockerfile front end: parser, word expansion, typed instructions. Pure: no I/O.
//!
//! Text becomes an untyped [`Node`] list (the parser, matching BuildKit's
//! `frontend/dockerfile/parser`); words are expanded by the shell lexer (BuildKit's
//! `shell/lex.go` semantics); typed instructions are built from nodes.

mod ast;
pub mod instructions;

pub use ast::{Directives, Dockerfile, Heredoc, Node};
