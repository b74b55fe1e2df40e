//! The rootless executor: runs RUN steps in user, mount, PID, UTS and IPC namespaces.
