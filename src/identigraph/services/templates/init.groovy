// Binds the traversal source that DriverRemoteConnection(url, "g") targets.
def globals = [:]
globals << [g : traversal().withEmbedded(graph)]
