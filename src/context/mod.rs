//! The build context: walking it, `.dockerignore` matching, and content hashes of what COPY/ADD read.
