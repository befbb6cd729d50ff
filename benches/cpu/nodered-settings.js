// Node-RED settings for scripts/bench-cpu.sh: the flow file beside this one, no editor (the
// runtime alone is measured), loopback only, warnings only in the log.
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.FR_NODERED_PORT || "1880", 10),
    httpAdminRoot: false,
    httpNodeRoot: false,
    credentialSecret: false,
    flowFilePretty: false,
    logging: { console: { level: "warn", metrics: false, audit: false } },
    editorTheme: { projects: { enabled: false } },
    telemetry: { enabled: false },
};
