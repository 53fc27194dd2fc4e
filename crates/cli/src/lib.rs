//! The commands people type, and the management API client they share:
//!
//! ```text
//!  client       trellis apply / get / describe / delete
//!  cluster_cli  trellis cluster register|rotate|deregister|list, trellis check
//!  insights_cli trellis insights [--all] [-o json], trellis insights silence|unsilence|silences
//!  access_cli   trellis config (contexts), trellis token, trellis audit
//!  version_cli  trellis version: the client's and the server's
//!  dashboard_cli trellis dashboard: the web UI in a browser, signed in
//!  debug_report trellis debug report: one archive of the mesh's state, secrets redacted
//!  proxy_config_cli trellis proxy-config: a proxy's live Envoy config, through its agent
//!  api_client   the connection to the management API: server, CA, credential (flags, env, context)
//!  cli_config   the client config file of named contexts, like a kubeconfig (the management
//!               server writes its admin.conf in this format)
//!  up           trellis up: a local two-cluster mesh from the one binary, with the demo app
//!  demo_app     trellis demo-app: the demo's tiny HTTP service
//! ```
//!
//! Each command is an args struct (clap derive) and a function; the `trellis` binary only
//! dispatches to them.

pub mod access_cli;
pub mod api_client;
pub mod cli_config;
pub mod client;
pub mod cluster_cli;
pub mod dashboard_cli;
pub mod debug_report;
pub mod demo_app;
pub mod insights_cli;
pub mod proxy_config_cli;
pub mod up;
pub mod version_cli;
