//! The lock held from admission to write: two writers must not both pass admission against the
//! same state and then store a combination admission never saw. One server's own lock is
//! enough for it; a replicated store makes the lock one for every replica, and hands it over
//! only once this replica's view holds every write made before.

/// Held until dropped. Empty where the server's own lock suffices.
#[derive(Default)]
pub struct WriteLock(Option<Box<dyn Send>>);

impl WriteLock {
    /// A lock released when `held` is dropped.
    pub fn holding(held: impl Send + 'static) -> Self {
        WriteLock(Some(Box::new(held)))
    }

    pub fn is_shared(&self) -> bool {
        self.0.is_some()
    }
}
