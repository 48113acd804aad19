//! Lock guards that carry on past a poisoned lock: the data behind the daemon's locks are
//! plain values, valid whatever a panicking holder left half done, and a panic is reported
//! where it happened (a thread's restart), not again by every later reader.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `Mutex::lock`, past a poisoned mutex.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `RwLock::read`, past a poisoned lock.
pub(crate) fn shared<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// `RwLock::write`, past a poisoned lock.
pub(crate) fn exclusive<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
