//! BuildKit-exact Dockerfile front end: parser, word expansion, typed instructions. Pure: no I/O.
//!
//! Text becomes an untyped [`Node`] list (the parser, matching BuildKit's
//! `frontend/dockerfile/parser`); words are expanded by the shell lexer (BuildKit's
//! `shell/lex.go` semantics); typed instructions are built from nodes.

mod ast;
mod dump;
mod error;
mod heredoc;
pub mod instructions;
mod line_parsers;
mod parser;
pub mod shell;
mod shell_pattern;

pub use ast::{Directives, Dockerfile, Heredoc, Node};
pub use dump::{dump, dump_node, is_legacy_key_value};
pub use error::ParseError;
pub use parser::parse;
pub use shell::{Expansion, Lexer, ShellError, VarLookup};
