// The network topology: networks, routers and servers as a graph (cytoscape), asked
// again every few seconds and redrawn only when it changed; a click opens the item.
(function () {
  const box = document.getElementById("topology");
  const colors = { network: "#2563eb", external: "#6b7280", router: "#ea580c", server: "#16a34a" };
  const cy = cytoscape({
    container: box,
    style: [
      { selector: "node", style: { label: "data(label)", "background-color": (n) => colors[n.data("kind")] || "#000",
        shape: (n) => ({ router: "diamond", server: "round-rectangle" }[n.data("kind")] || "ellipse"),
        "font-size": 11, color: "#111" } },
      { selector: "edge", style: { width: 2, "line-color": "#9ca3af" } },
    ],
  });
  cy.on("tap", "node", (e) => { window.location.href = e.target.data("href"); });
  let last = "";
  async function refresh() {
    const response = await fetch(box.dataset.source, { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const text = await response.text();
    if (text === last) return;
    last = text;
    const graph = JSON.parse(text);
    cy.elements().remove();
    cy.add([...graph.nodes, ...graph.edges]);
    cy.layout({ name: "breadthfirst", directed: false, padding: 20 }).run();
    box.dataset.nodes = String(graph.nodes.length);
    box.dataset.labels = graph.nodes.map((n) => n.data.label).join(",");
  }
  refresh();
  setInterval(refresh, 3000);
})();
