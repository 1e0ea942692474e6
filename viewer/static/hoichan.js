/* Hoichan viewer: the parts that must run in the browser.
 *
 * Loaded through gr.HTML(head=...) so that Gradio waits for it (and for OpenSeadragon and
 * tus-js-client) before calling js_on_load. Each entry point receives the Gradio component's
 * element, props, watch and trigger. Python hands the API base URL and the user's bearer token
 * to the page in the component's JSON value: tiles and tus uploads go from the browser straight
 * to the API, as the user.
 */
(function () {
  "use strict";
  const H = (window.Hoichan = window.Hoichan || {});

  function parse(value) {
    if (!value) return {};
    if (typeof value === "object") return value;
    try {
      return JSON.parse(value);
    } catch (e) {
      return {};
    }
  }

  function authHeaders(config) {
    return config.token ? { Authorization: "Bearer " + config.token } : {};
  }

  /* Worklist rows: a click (or Enter) on a row opens the case. */
  H.worklist = function (element, trigger) {
    const open = (event) => {
      const row = event.target.closest("tr[data-case]");
      if (row) trigger("select", { case_id: row.dataset.case });
    };
    element.addEventListener("click", open);
    element.addEventListener("keydown", (event) => {
      if (event.key === "Enter") open(event);
    });
  };

  /* Arrow keys and the mouse wheel over the slice scroll slices, as on a PACS workstation. */
  H.sliceKeys = function () {
    if (H._keysInstalled) return;
    H._keysInstalled = true;
    const click = (id) => {
      const button = document.getElementById(id);
      if (button && button.offsetParent !== null) button.click();
    };
    document.addEventListener("keydown", (event) => {
      const tag = (event.target.tagName || "").toLowerCase();
      if (tag === "input" || tag === "textarea" || tag === "select" || event.target.isContentEditable) return;
      if (!document.getElementById("hc-slice-image")) return;
      if (event.key === "ArrowUp" || event.key === "ArrowLeft") {
        click("hc-prev");
        event.preventDefault();
      } else if (event.key === "ArrowDown" || event.key === "ArrowRight") {
        click("hc-next");
        event.preventDefault();
      }
    });
  };

  /* Deep zoom on the API's DeepZoom tiles, with a heatmap layer and "go to" commands. */
  H.slideViewer = function (element, props, watch) {
    const box = element.querySelector(".hc-osd");
    const status = element.querySelector(".hc-osd-status");
    const state = { viewer: null, slideId: null, heatmap: null, heatmapPending: false, seq: null };
    H.slide = state;

    function open(config) {
      if (state.viewer) {
        state.viewer.destroy();
        state.viewer = null;
      }
      state.slideId = config.slide_id;
      state.heatmap = null;
      state.heatmapPending = false;
      if (!config.slide_id) {
        status.textContent = config.message || "";
        return;
      }
      const base = config.api + "/api/v1/slides/" + config.slide_id;
      state.viewer = window.OpenSeadragon({
        element: box,
        prefixUrl: config.assets + "/vendor/openseadragon/images/",
        tileSources: base + ".dzi",
        loadTilesWithAjax: true,
        ajaxHeaders: authHeaders(config),
        showNavigator: true,
        navigatorPosition: "BOTTOM_RIGHT",
        maxZoomPixelRatio: 2,
        visibilityRatio: 0.5,
        crossOriginPolicy: false,
        gestureSettingsTouch: { pinchRotate: false },
      });
      state.viewer.addHandler("open", () => {
        status.textContent = config.label || "";
        apply(config);
      });
      state.viewer.addHandler("open-failed", (event) => {
        status.textContent = "cannot open slide: " + (event.message || "");
      });
    }

    function setHeatmap(config) {
      const viewer = state.viewer;
      if (!viewer || !viewer.world.getItemCount()) return;
      const opacity = config.opacity == null ? 0.4 : Number(config.opacity);
      if (config.heatmap && !state.heatmap && !state.heatmapPending) {
        /* The PNG covers the whole slide at its aspect ratio: laid over it, as wide as the slide. */
        state.heatmapPending = true;
        viewer.addSimpleImage({
          url: config.heatmap,
          x: 0,
          y: 0,
          width: viewer.world.getItemAt(0).getBounds().width,
          opacity: opacity,
          success: (event) => {
            state.heatmap = event.item;
            state.heatmapPending = false;
            state.heatmap.setOpacity(state.opacity);
          },
          error: () => {
            state.heatmapPending = false;
          },
        });
      } else if (state.heatmap) {
        state.heatmap.setOpacity(config.heatmap ? opacity : 0);
      }
      state.opacity = config.heatmap ? opacity : 0;
    }

    function goTo(rect) {
      const viewer = state.viewer;
      if (!viewer || !rect || !viewer.world.getItemCount()) return;
      const slide = viewer.world.getItemAt(0);
      const target = slide.imageToViewportRectangle(rect.x, rect.y, rect.width, rect.height);
      viewer.viewport.fitBoundsWithConstraints(target.times(1.0));
    }

    function apply(config) {
      setHeatmap(config);
      if (config.goto && config.seq !== state.seq) goTo(config.goto);
      state.seq = config.seq;
    }

    function update() {
      const config = parse(props.value);
      if (config.slide_id !== state.slideId) open(config);
      else apply(config);
    }

    watch("value", update);
    update();
  };

  /* A resumable slide upload with tus: survives a dropped link and a closed tab. */
  H.tusUpload = function (element, props, watch, trigger) {
    const input = element.querySelector(".hc-tus-file");
    const start = element.querySelector(".hc-tus-start");
    const pause = element.querySelector(".hc-tus-pause");
    const bar = element.querySelector(".hc-tus-bar");
    const status = element.querySelector(".hc-tus-status");
    let upload = null;
    H.tus = { get upload() { return upload; } };

    function config() {
      return parse(props.value);
    }

    start.addEventListener("click", async () => {
      const cfg = config();
      const file = input.files && input.files[0];
      if (!file || !cfg.case_id) {
        status.textContent = cfg.case_id ? "choose a file" : "choose a case first";
        return;
      }
      let slideLocation = "";
      upload = new window.tus.Upload(file, {
        endpoint: cfg.api + "/uploads",
        headers: authHeaders(cfg),
        chunkSize: cfg.chunk_size || 8 * 1024 * 1024,
        retryDelays: [0, 1000, 3000, 5000, 10000],
        metadata: { filename: file.name, filetype: file.type || "application/octet-stream", case_id: cfg.case_id },
        storeFingerprintForResuming: true,
        removeFingerprintOnSuccess: true,
        onProgress: (sent, total) => {
          bar.value = total ? Math.floor((sent / total) * 100) : 0;
          status.textContent = Math.floor(sent / 1048576) + " / " + Math.ceil(total / 1048576) + " MiB";
        },
        onAfterResponse: (req, res) => {
          const location = res.getHeader("Slide-Location");
          if (location) slideLocation = location;
        },
        onError: (error) => {
          status.textContent = "upload failed: " + error;
        },
        onSuccess: () => {
          bar.value = 100;
          status.textContent = "done";
          trigger("upload", { slide_location: slideLocation, filename: file.name });
        },
      });
      const previous = await upload.findPreviousUploads();
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    });

    pause.addEventListener("click", () => {
      if (upload) upload.abort();
      status.textContent = "paused";
    });
  };
})();
