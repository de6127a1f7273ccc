"""The headless-Chromium harness itself (tests/browser.py): scripts run, their errors are reported."""

from __future__ import annotations

from pathlib import Path

from browser import render, require_chromium


def test_render_returns_the_dom_that_scripts_built(tmp_path: Path) -> None:
    require_chromium()
    page = tmp_path / "built.html"
    page.write_text("""<!doctype html><html><body><div id="root"></div><script>
const root = document.getElementById("root");
for (const word of ["to", "be"]) {
  const span = document.createElement("span");
  span.className = "tok";
  span.textContent = word;
  root.appendChild(span);
}
const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
svg.setAttribute("id", "chart");
svg.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "rect"));
root.appendChild(svg);
</script></body></html>""", encoding="utf-8")
    result = render(page)
    assert '<span class="tok">to</span><span class="tok">be</span>' in result.dom
    assert '<svg id="chart"><rect></rect></svg>' in result.dom
    assert result.console_errors == []


def test_render_reports_an_uncaught_error(tmp_path: Path) -> None:
    require_chromium()
    page = tmp_path / "throws.html"
    page.write_text('<!doctype html><html><body><p>before</p><script>throw new Error("boom");</script>'
                    "<p>after</p></body></html>", encoding="utf-8")
    result = render(page)
    assert "<p>after</p>" in result.dom
    assert len(result.console_errors) == 1
    assert "Uncaught Error: boom" in result.console_errors[0], result.console_errors


def test_a_missing_chromium_skips_here_and_fails_under_ci(monkeypatch) -> None:
    import browser
    import pytest

    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        browser.require_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        browser.require_chromium()
