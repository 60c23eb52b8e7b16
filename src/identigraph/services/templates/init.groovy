// Rendered by identigraph.services.local (edit the template, not the copy). Runs inside Gremlin Server at start-up.
//
// 1. Restores the graph from the newest checkpoint whose checksum and content read back; an unreadable one is
//    skipped (and named in boot.json), so a damaged file never leaves the server without its graph.
// 2. Writes boot.json with a fresh boot id (before `g` is bound, so before any request is served): a writer that
//    reads the same id before and after its request knows which server instance holds its commit.
// 3. Writes checkpoints every few seconds and once more on SIGTERM: a transaction-consistent capture (every element
//    container locked for the few milliseconds it takes to collect the committed versions; commits in between
//    fail as ordinary conflicts and are retried by the client), then a Gryo file written beside the old ones,
//    fsynced, renamed into place, and only then its metadata (the commit point). Nothing is ever rewritten in place.
//
// TinkerGraph's own persistence (graphLocation) is off: it writes only on close, in place, and a kill during that
// write destroys the previous file.
// IdentigraphCheckpoints: templates/checkpoints.groovy, compiled into the cache and on the classpath.
def identigraphConfig = new groovy.json.JsonSlurper().parse(new File('@CONFIG_PATH@'))
def checkpoints = new IdentigraphCheckpoints(graph, identigraphConfig)
def restored = checkpoints.restore(identigraphConfig.legacy_file)
checkpoints.stampBoot(restored)
checkpoints.remember()
checkpoints.start()

// Binds the traversal source that DriverRemoteConnection(url, "g") targets.
def globals = [:]
globals << [g : traversal().withEmbedded(graph)]
