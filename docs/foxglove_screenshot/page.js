// Mounts Foxglove Studio's App (exported by the studio-base bundle onto window) with one data
// source (a remote MCAP file, from the ?ds=remote-file&ds.url=... deep link) and the layout
// fetched from ./layout.json, kept in memory (no IndexedDB, no sign-in, no extensions).
"use strict";

class MemoryLayoutStorage {
  constructor(layouts) { this.layouts = new Map(layouts.map((l) => [l.id, l])); }
  async list() { return [...this.layouts.values()]; }
  async get(_ns, id) { return this.layouts.get(id); }
  async put(_ns, layout) { this.layouts.set(layout.id, layout); return layout; }
  async delete(_ns, id) { this.layouts.delete(id); }
  async importLayouts() {}
  async migrateUnnamespacedLayouts() {}
}

class MemoryAppConfiguration {
  constructor(values) { this.values = { ...values }; }
  get(key) { return this.values[key]; }
  async set(key, value) { this.values[key] = value; }
  addChangeListener() {}
  removeChangeListener() {}
}

// Studio 1.48's "Image" panel is an experimental one that draws nothing without a CameraInfo;
// its image panel then was "ImageViewPanel" ({cameraTopic}). The layout's Image panels are
// shown with that one, same topics, same places (current Foxglove and Lichtblick read the
// layout as it is).
function oldImagePanels(layout) {
  const text = JSON.stringify(layout).replace(/"Image!/g, '"ImageViewPanel!');
  const out = JSON.parse(text);
  for (const [id, cfg] of Object.entries(out.configById)) {
    if (id.startsWith("ImageViewPanel!")) {
      out.configById[id] = { cameraTopic: cfg.imageMode.imageTopic, enabledMarkerTopics: [], mode: "fit",
                             synchronize: false, transformMarkers: false };
    }
  }
  return out;
}

async function main() {
  const data = oldImagePanels(await (await fetch("layout.json")).json());
  data.linkedGlobalVariables = data.linkedGlobalVariables || [];
  const now = new Date().toISOString();
  const layout = { id: "priorocc", name: "PriorOcc", permission: "CREATOR_WRITE",
                   baseline: { data, savedAt: now }, working: undefined, syncInfo: undefined };
  // a clean picture: no sidebars, the panels' one-time settings tooltips already seen
  localStorage.setItem("fox.workspace", JSON.stringify({ state: { sidebarItem: null, leftSidebarOpen: false },
                                                         version: 0 }));
  localStorage.setItem("studio.profile-data", JSON.stringify({
    currentLayoutId: layout.id,
    onboarding: { settingsTooltipShownForPanelTypes: Object.keys(data.configById).map((id) => id.split("!")[0]) },
  }));
  await window.initI18n();
  const app = window.React.createElement(window.App, {
    deepLinks: [window.location.href],
    appConfiguration: new MemoryAppConfiguration({ colorScheme: "dark", launchPreference: "web" }),
    dataSources: [new window.RemoteDataSourceFactory()],
    layoutStorage: new MemoryLayoutStorage([layout]),
    extensionLoaders: [],
    enableGlobalCss: true,
  });
  window.ReactDOM.render(app, document.getElementById("root"));
}

main().catch((e) => { console.error("page.js: " + (e && e.stack ? e.stack : e)); });
