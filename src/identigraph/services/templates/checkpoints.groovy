// Compiled once into the cache by identigraph.services.local and put on Gremlin Server's classpath (compiling
// it inside the start-up script cost seconds on every start). Used by init.groovy; see there for what it does.
import groovy.json.JsonOutput
import groovy.json.JsonSlurper
import groovy.transform.CompileStatic
import java.lang.reflect.Field
import java.nio.channels.FileChannel
import java.nio.file.Files
import java.nio.file.Path
import java.nio.file.Paths
import java.nio.file.StandardCopyOption
import java.nio.file.StandardOpenOption
import java.security.DigestInputStream
import java.security.DigestOutputStream
import java.security.MessageDigest
import java.util.concurrent.locks.ReentrantLock
import org.apache.tinkerpop.gremlin.structure.Direction
import org.apache.tinkerpop.gremlin.structure.Edge
import org.apache.tinkerpop.gremlin.structure.Graph
import org.apache.tinkerpop.gremlin.structure.Property
import org.apache.tinkerpop.gremlin.structure.T
import org.apache.tinkerpop.gremlin.structure.Vertex
import org.apache.tinkerpop.gremlin.structure.VertexProperty
import org.apache.tinkerpop.gremlin.structure.io.gryo.GryoReader
import org.apache.tinkerpop.gremlin.structure.io.gryo.GryoWriter
import org.apache.tinkerpop.gremlin.structure.util.Attachable
import org.apache.tinkerpop.gremlin.structure.util.reference.ReferenceVertex
import org.apache.tinkerpop.gremlin.structure.util.star.StarGraph
import org.slf4j.LoggerFactory

@CompileStatic
class IdentigraphCheckpoints {
    final org.slf4j.Logger log = LoggerFactory.getLogger('identigraph.checkpoints')
    final Graph graph
    final Path dir
    final double intervalS
    final double maxShare
    final int keep
    final String bootId = UUID.randomUUID().toString()
    private final Field verticesF, edgesF, elementF, deletedF, lockF, versionF, vPropsF, ePropsF, outIdF, inIdF
    private long lastSignature = Long.MIN_VALUE
    private long lastCount = -1
    private Map lastMeta = null
    private volatile boolean stopping = false
    private Thread worker

    IdentigraphCheckpoints(Graph graph, Map cfg) {
        this.graph = graph
        this.dir = Paths.get((String) cfg.dir)
        this.intervalS = ((Number) cfg.interval_s).doubleValue()
        this.maxShare = ((Number) cfg.max_share).doubleValue()
        this.keep = ((Number) cfg.keep).intValue()
        Files.createDirectories(dir)
        Class g = graph.getClass()
        Class c = Class.forName('org.apache.tinkerpop.gremlin.tinkergraph.structure.TinkerElementContainer')
        Class el = Class.forName('org.apache.tinkerpop.gremlin.tinkergraph.structure.TinkerElement')
        Class tv = Class.forName('org.apache.tinkerpop.gremlin.tinkergraph.structure.TinkerVertex')
        Class te = Class.forName('org.apache.tinkerpop.gremlin.tinkergraph.structure.TinkerEdge')
        verticesF = open(g, 'vertices'); edgesF = open(g, 'edges')
        elementF = open(c, 'element'); deletedF = open(c, 'isDeleted'); lockF = open(c, 'lock')
        versionF = open(el, 'currentVersion')
        vPropsF = open(tv, 'properties'); ePropsF = open(te, 'properties')
        outIdF = open(te, 'outVertexId'); inIdF = open(te, 'inVertexId')
    }

    private static Field open(Class k, String name) {
        Field f = k.getDeclaredField(name)
        f.setAccessible(true)
        return f
    }

    // ---- restore -------------------------------------------------------------------------------------------
    Map restore(String legacy) {
        List<Map> skipped = []
        for (Path tmp : list('.tmp')) Files.deleteIfExists(tmp)  // a write that never reached its rename
        for (Map meta : metas()) {
            Path file = dir.resolve((String) meta.file)
            try {
                if (!Files.exists(file)) throw new IOException('file is missing')
                if (Files.size(file) != ((Number) meta.bytes).longValue())
                    throw new IOException("size ${Files.size(file)} != ${meta.bytes} recorded")
                String digest = load(file)
                if (digest != meta.sha256) throw new IOException("checksum ${digest} != ${meta.sha256} recorded")
                long nv = count(verticesF), ne = count(edgesF)
                if (nv != ((Number) meta.vertices).longValue() || ne != ((Number) meta.edges).longValue())
                    throw new IOException("read ${nv} vertices/${ne} edges, ${meta.vertices}/${meta.edges} recorded")
                lastMeta = meta
                return [restored: meta, skipped: skipped]
            } catch (Throwable e) {
                log.error("checkpoint ${file} is unreadable, trying the one before it: ${e}".toString())
                skipped << ([file: file.toString(), error: e.toString().take(500)] as Map)
                graph.tx().rollback()
                graph.invokeMethod('clear', null)
            }
        }
        if (legacy && Files.exists(Paths.get(legacy)) && skipped.isEmpty()) {
            try {  // TinkerGraph's own close-time file from before checkpoints existed
                graph.io(org.apache.tinkerpop.gremlin.structure.io.IoCore.gryo()).readGraph(legacy)
                return [restored: [file: legacy, seq: 0, legacy: true], skipped: skipped]
            } catch (Throwable e) {
                skipped << ([file: legacy, error: e.toString().take(500)] as Map)
                graph.tx().rollback()
                graph.invokeMethod('clear', null)
            }
        }
        return [restored: null, skipped: skipped]
    }

    private List<Path> list(String suffix) {
        List<Path> out = []
        Files.list(dir).withCloseable { s -> s.forEach { Path p -> if (p.fileName.toString().endsWith(suffix)) out << p } }
        return out
    }

    List<Map> metas() {
        List<Map> out = []
        for (Path p : list('.json')) {
            String name = p.fileName.toString()
            if (!name.startsWith('graph-')) continue
            try { out << (Map) new JsonSlurper().parse(p.toFile()) } catch (Throwable e) { log.warn("skipping ${p}: ${e}".toString()) }
        }
        return out.sort { Map a, Map b -> ((Number) b.seq).longValue() <=> ((Number) a.seq).longValue() }
    }

    private long count(Field mapF) {
        long n = 0
        for (Object c : ((Map) mapF.get(graph)).values()) if (elementF.get(c) != null && !((Boolean) deletedF.get(c))) n++
        return n
    }

    /** Two streaming passes (vertices, then their out-edges): memory stays at one graph, not two. */
    private String load(Path file) {
        GryoReader reader = GryoReader.build().create()
        MessageDigest md = MessageDigest.getInstance('SHA-256')
        long n = 0
        new DigestInputStream(new BufferedInputStream(Files.newInputStream(file), 1 << 20), md).withCloseable { InputStream input ->
            Iterator<Vertex> it = reader.readVertices(input, { Attachable<Vertex> a ->
                Vertex sv = a.get()
                Vertex v = graph.addVertex(T.id, sv.id(), T.label, sv.label())
                sv.properties().each { VertexProperty p -> v.property(VertexProperty.Cardinality.list, p.key(), p.value()) }
                if (++n % 10000 == 0) graph.tx().commit()
                return v
            }, null, Direction.OUT)
            while (it.hasNext()) it.next()
            while (input.read(new byte[1 << 16]) >= 0) {}
        }
        graph.tx().commit()
        new BufferedInputStream(Files.newInputStream(file), 1 << 20).withCloseable { InputStream input ->
            Iterator<Vertex> it = reader.readVertices(input, { Attachable<Vertex> a -> a.get() }, { Attachable<Edge> a ->
                Edge se = a.get()
                Vertex out = graph.vertices(se.outVertex().id()).next()
                Vertex inV = graph.vertices(se.inVertex().id()).next()
                Edge e = out.addEdge(se.label(), inV, T.id, se.id())
                se.properties().each { Property p -> e.property(p.key(), p.value()) }
                if (++n % 10000 == 0) graph.tx().commit()
                return e
            }, Direction.OUT)
            while (it.hasNext()) it.next()
        }
        graph.tx().commit()
        return md.digest().encodeHex().toString()
    }

    // ---- boot ----------------------------------------------------------------------------------------------
    void stampBoot(Map restore) {
        writeJson(dir.resolve('boot.json'), [boot_id: bootId, started_at_ms: System.currentTimeMillis(),
                                             restored: restore.restored, skipped: restore.skipped])
    }

    // ---- checkpoints ---------------------------------------------------------------------------------------
    /** The committed version of every element at one instant; see the header for why this is consistent. */
    private Map capture() {
        Map<Object, Object> vmap = (Map) verticesF.get(graph), emap = (Map) edgesF.get(graph)
        List<Object> held = new ArrayList<>(vmap.size() + emap.size() + 1024)
        long at = System.currentTimeMillis()  // commits acknowledged before this instant are in the capture
        try {
            for (int round = 0; round < 2; round++) {  // the second round takes containers created meanwhile
                for (Map<Object, Object> m : [vmap, emap]) for (Object c : m.values()) {
                    ReentrantLock l = (ReentrantLock) lockF.get(c)
                    if (l.isHeldByCurrentThread()) continue
                    while (!l.tryLock()) Thread.onSpinWait()  // a commit holds it for microseconds
                    held.add(c)
                }
            }
            List<Object> vs = new ArrayList<>(vmap.size()), es = new ArrayList<>(emap.size())
            long sig = 0
            for (Object c : held) {
                Object e = elementF.get(c)
                if (e == null || ((Boolean) deletedF.get(c))) continue
                (e instanceof Vertex ? vs : es).add(e)
                Object id = ((org.apache.tinkerpop.gremlin.structure.Element) e).id()
                // order-independent: every commit gives its elements a new version
                long h = ((Long) versionF.get(e)).longValue() * 0x9E3779B97F4A7C15L + id.hashCode()
                sig += h ^ (h >>> 29)
            }
            return [at: at, vertices: vs, edges: es, signature: sig]
        } finally {
            for (Object c : held) ((ReentrantLock) lockF.get(c)).unlock()
        }
    }

    synchronized Map checkpoint(String why) {
        long t0 = System.nanoTime()
        Map snap = capture()
        double lockedS = (System.nanoTime() - t0) / 1e9
        List vs = (List) snap.vertices, es = (List) snap.edges
        Map meta
        if (lastMeta != null && snap.signature == lastSignature && vs.size() + es.size() == lastCount) {
            meta = new LinkedHashMap(lastMeta)  // nothing committed since: the same file, vouched for until now
            meta.consistent_at_ms = snap.at
            meta.boot_id = bootId
        } else {
            List<Map> known = metas()  // after the newest on disk, even one that could not be restored
            long seq = (known ? ((Number) known[0].seq).longValue() : 0L) + 1
            String name = String.format('graph-%08d.kryo', seq)
            Path tmp = dir.resolve(name + '.tmp')
            Map written = write(tmp, vs, es)
            Files.move(tmp, dir.resolve(name), StandardCopyOption.ATOMIC_MOVE)
            fsyncDir()
            meta = [seq: seq, file: name, boot_id: bootId, consistent_at_ms: snap.at, vertices: vs.size(),
                    edges: es.size(), bytes: written.bytes, sha256: written.sha256,
                    seconds: (System.nanoTime() - t0) / 1e9, locked_seconds: lockedS, why: why]
        }
        writeJson(dir.resolve(String.format('graph-%08d.json', ((Number) meta.seq).longValue())), meta)
        writeJson(dir.resolve('LATEST.json'), meta)
        lastMeta = meta
        lastSignature = (long) snap.signature
        lastCount = vs.size() + es.size()
        prune()
        return meta
    }

    private Map write(Path tmp, List vs, List es) {
        Map<Object, List<Object>> outEdges = new HashMap<>()
        for (Object e : es) outEdges.computeIfAbsent(outIdF.get(e), { k -> new ArrayList<Object>() }) << e
        GryoWriter writer = GryoWriter.build().create()
        MessageDigest md = MessageDigest.getInstance('SHA-256')
        FileOutputStream fos = new FileOutputStream(tmp.toFile())
        long bytes
        try {
            DigestOutputStream out = new DigestOutputStream(new BufferedOutputStream(fos, 1 << 20), md)
            Iterator<Object> it = vs.iterator()
            Iterator<Vertex> stars = new Iterator<Vertex>() {
                boolean hasNext() { it.hasNext() }
                Vertex next() { star((Vertex) it.next(), outEdges) }
            }
            writer.writeVertices(out, stars, Direction.OUT)
            out.flush()
            fos.getChannel().force(true)
            bytes = fos.getChannel().size()
        } finally {
            fos.close()
        }
        return [bytes: bytes, sha256: md.digest().encodeHex().toString()]
    }

    private Vertex star(Vertex v, Map<Object, List<Object>> outEdges) {
        StarGraph sg = StarGraph.open()
        Vertex sv = sg.addVertex(T.id, v.id(), T.label, v.label())
        Map<String, List<VertexProperty>> props = (Map) vPropsF.get(v)
        if (props != null) for (Map.Entry<String, List<VertexProperty>> kv : props.entrySet())
            for (VertexProperty p : kv.value) sv.property(VertexProperty.Cardinality.list, kv.key, p.value())
        for (Object o : outEdges.getOrDefault(v.id(), Collections.emptyList())) {
            Edge e = (Edge) o
            List<Object> kvs = [T.id, e.id()]
            Map<String, Property> eprops = (Map) ePropsF.get(e)
            if (eprops != null) for (Map.Entry<String, Property> p : eprops.entrySet()) { kvs << p.key; kvs << p.value.value() }
            sv.addEdge(e.label(), new ReferenceVertex(inIdF.get(e)), kvs.toArray())
        }
        return sv
    }

    private void writeJson(Path path, Map content) {
        Path tmp = path.resolveSibling(path.fileName.toString() + '.tmp')
        FileOutputStream fos = new FileOutputStream(tmp.toFile())
        try {
            fos.write(JsonOutput.toJson(content).getBytes('UTF-8'))
            fos.getChannel().force(true)
        } finally {
            fos.close()
        }
        Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE)
        fsyncDir()
    }

    private void fsyncDir() {
        FileChannel.open(dir, StandardOpenOption.READ).withCloseable { FileChannel ch -> ch.force(true) }
    }

    private void prune() {
        List<Map> all = metas()
        for (Map m : all.drop(keep)) {
            Files.deleteIfExists(dir.resolve((String) m.file))
            Files.deleteIfExists(dir.resolve(String.format('graph-%08d.json', ((Number) m.seq).longValue())))
        }
    }

    /** What the restored graph looks like, so the first periodic round does not rewrite an unchanged graph. */
    void remember() {
        Map snap = capture()
        lastSignature = (long) snap.signature
        lastCount = ((List) snap.vertices).size() + ((List) snap.edges).size()
    }

    void start() {
        worker = new Thread({
            while (!stopping) {
                double wait = intervalS
                try {
                    Map meta = checkpoint('periodic')
                    double took = ((Number) meta.seconds ?: 0).doubleValue()
                    // at most maxShare of the time goes to checkpoints, however large the graph grows
                    wait = Math.max(intervalS, took * (1 / maxShare - 1))
                } catch (Throwable e) {
                    log.error("checkpoint failed (the previous one stays): ${e}".toString(), e)
                }
                long until = System.currentTimeMillis() + (long) (wait * 1000)
                while (!stopping && System.currentTimeMillis() < until) Thread.sleep(50)
            }
        } as Runnable, 'identigraph-checkpoints')
        worker.setDaemon(true)
        worker.start()
        Runtime.getRuntime().addShutdownHook(new Thread({
            stopping = true
            worker.join(60000)
            try {
                Map meta = checkpoint('shutdown')
                log.info("final checkpoint ${meta.file}: ${meta.vertices} vertices, ${meta.edges} edges".toString())
            } catch (Throwable e) {
                log.error("final checkpoint failed (the previous one stays): ${e}".toString(), e)
            }
        } as Runnable, 'identigraph-final-checkpoint'))
    }
}

