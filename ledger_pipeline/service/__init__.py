"""The hosted connection service (`ledger-pipeline serve`): tenants connect their accounting systems through signed
links, the providers' own consent pages and our callbacks; operators see every connection's health; preflight proves
a tenant is ready before a close. See app.py (routes), links.py (the link algorithm R2a implements), store.py (its
tables), preflight.py (checks), server.py (running it)."""
