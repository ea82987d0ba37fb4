//! Processes inside containers: run a command in a container's network
//! namespace with its private `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`
//! (bind-mounted in a mount namespace of its own) and hostname (UTS namespace).
