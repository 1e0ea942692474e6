"""Labels in English (default) and Vietnamese.

Two tables, as LLaMA-Factory's web UI keeps them: ``LOCALES`` holds the constructor arguments of
named components (switched in place when the user picks a language), ``MESSAGES`` the text that
handlers write into Markdown and HTML. A key missing in Vietnamese falls back to English, so a new
label never shows up blank.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("en", "vi")
DEFAULT_LANGUAGE = "en"

LOCALES: dict[str, dict[str, dict[str, Any]]] = {
    "username": {"en": {"label": "Username"}, "vi": {"label": "Tên đăng nhập"}},
    "password": {"en": {"label": "Password"}, "vi": {"label": "Mật khẩu"}},
    "sign_in": {"en": {"value": "Sign in"}, "vi": {"value": "Đăng nhập"}},
    "sign_out": {"en": {"value": "Sign out"}, "vi": {"value": "Đăng xuất"}},
    "tab_worklist": {"en": {"label": "Worklist"}, "vi": {"label": "Danh sách ca"}},
    "tab_review": {"en": {"label": "Case review"}, "vi": {"label": "Đọc ca"}},
    "tab_referrals": {"en": {"label": "Referrals"}, "vi": {"label": "Chuyển ca"}},
    "tab_models": {"en": {"label": "Models"}, "vi": {"label": "Mô hình AI"}},
    "filter_status": {"en": {"label": "Status"}, "vi": {"label": "Trạng thái"}},
    "filter_kind": {"en": {"label": "Kind"}, "vi": {"label": "Loại ca"}},
    "filter_priority": {"en": {"label": "Priority"}, "vi": {"label": "Mức ưu tiên"}},
    "filter_mine": {"en": {"label": "Assigned to me"}, "vi": {"label": "Giao cho tôi"}},
    "refresh": {"en": {"value": "Refresh"}, "vi": {"value": "Làm mới"}},
    "series": {"en": {"label": "Series"}, "vi": {"label": "Loạt ảnh"}},
    "slice": {"en": {"label": "Slice"}, "vi": {"label": "Lát cắt"}},
    "prev_slice": {"en": {"value": "◀ Prev"}, "vi": {"value": "◀ Trước"}},
    "next_slice": {"en": {"value": "Next ▶"}, "vi": {"value": "Sau ▶"}},
    "window_preset": {"en": {"label": "Window"}, "vi": {"label": "Cửa sổ"}},
    "window_center": {"en": {"label": "Level (C)"}, "vi": {"label": "Mức (C)"}},
    "window_width": {"en": {"label": "Width (W)"}, "vi": {"label": "Độ rộng (W)"}},
    "zoom": {"en": {"label": "Zoom"}, "vi": {"label": "Phóng to"}},
    "overlay": {"en": {"label": "AI overlay"}, "vi": {"label": "Lớp phủ AI"}},
    "finding_pick": {"en": {"label": "Finding"}, "vi": {"label": "Phát hiện"}},
    "go_to_finding": {"en": {"value": "Show its slice"}, "vi": {"value": "Xem lát cắt"}},
    "accept": {"en": {"value": "Accept"}, "vi": {"value": "Đồng ý"}},
    "reject": {"en": {"value": "Reject"}, "vi": {"value": "Bác bỏ"}},
    "amend": {"en": {"value": "Amend"}, "vi": {"value": "Sửa"}},
    "amend_label": {"en": {"label": "Corrected label"}, "vi": {"label": "Nhãn đã sửa"}},
    "op_findings": {"en": {"label": "Findings"}, "vi": {"label": "Mô tả"}},
    "op_impression": {"en": {"label": "Impression"}, "vi": {"label": "Kết luận"}},
    "op_recommendations": {"en": {"label": "Recommendations"}, "vi": {"label": "Đề nghị"}},
    "save_draft": {"en": {"value": "Save draft"}, "vi": {"value": "Lưu nháp"}},
    "sign": {"en": {"value": "Sign opinion"}, "vi": {"value": "Ký ý kiến"}},
    "start_review": {"en": {"value": "Take for review"}, "vi": {"value": "Nhận đọc ca"}},
    "info_request": {"en": {"label": "What is missing"}, "vi": {"label": "Thông tin cần bổ sung"}},
    "request_info": {"en": {"value": "Request more information"}, "vi": {"value": "Yêu cầu bổ sung"}},
    "video": {"en": {"value": "Start or join video session"}, "vi": {"value": "Mở phiên video"}},
    "heatmap_opacity": {"en": {"label": "Heatmap opacity"}, "vi": {"label": "Độ mờ bản đồ nhiệt"}},
    "slide_pick": {"en": {"label": "Slide"}, "vi": {"label": "Tiêu bản"}},
    "top_tiles": {"en": {"label": "Top tiles"}, "vi": {"label": "Vùng điểm cao"}},
    "case_kind": {"en": {"label": "Kind"}, "vi": {"label": "Loại ca"}},
    "target": {"en": {"label": "Refer to"}, "vi": {"label": "Chuyển đến"}},
    "patient_id": {"en": {"label": "Patient identifier"}, "vi": {"label": "Mã bệnh nhân"}},
    "patient_name": {"en": {"label": "Patient name"}, "vi": {"label": "Tên bệnh nhân"}},
    "question": {"en": {"label": "Clinical question"}, "vi": {"label": "Câu hỏi lâm sàng"}},
    "notes": {"en": {"label": "Clinical notes"}, "vi": {"label": "Ghi chú lâm sàng"}},
    "urgent": {"en": {"label": "Urgent"}, "vi": {"label": "Khẩn"}},
    "create_case": {"en": {"value": "Create case"}, "vi": {"value": "Tạo ca"}},
    "my_case": {"en": {"label": "Case"}, "vi": {"label": "Ca"}},
    "dicom_files": {
        "en": {"label": "DICOM files, a folder or a .zip"},
        "vi": {"label": "Tệp DICOM, thư mục hoặc .zip"},
    },
    "upload_dicom": {"en": {"value": "Upload DICOM"}, "vi": {"value": "Tải lên DICOM"}},
    "submit_case": {"en": {"value": "Submit to specialists"}, "vi": {"value": "Gửi chuyên gia"}},
    "reply": {"en": {"label": "Reply / added information"}, "vi": {"label": "Trả lời / bổ sung"}},
    "send_reply": {"en": {"value": "Send and resume review"}, "vi": {"value": "Gửi và tiếp tục"}},
    "opinion_pdf": {"en": {"label": "Signed opinion (PDF)"}, "vi": {"label": "Ý kiến đã ký (PDF)"}},
}

MESSAGES: dict[str, dict[str, str]] = {
    "title": {"en": "Hoichan — tele-consultation", "vi": "Hội chẩn từ xa — Hoichan"},
    "signed_in_as": {"en": "Signed in as **{name}** · {roles}", "vi": "Đăng nhập: **{name}** · {roles}"},
    "bad_login": {"en": "Wrong username or password.", "vi": "Sai tên đăng nhập hoặc mật khẩu."},
    "no_role_page": {
        "en": "Your role has no page in this viewer.",
        "vi": "Vai trò của bạn chưa có trang trong ứng dụng này.",
    },
    "not_allowed": {"en": "Not allowed for your role.", "vi": "Vai trò của bạn không được phép."},
    "empty_worklist": {"en": "No cases match.", "vi": "Không có ca phù hợp."},
    "col_priority": {"en": "Priority", "vi": "Ưu tiên"},
    "col_ai": {"en": "AI", "vi": "AI"},
    "col_deadline": {"en": "Deadline", "vi": "Hạn"},
    "col_from": {"en": "From", "vi": "Nơi chuyển"},
    "col_kind": {"en": "Kind", "vi": "Loại"},
    "col_status": {"en": "Status", "vi": "Trạng thái"},
    "col_question": {"en": "Clinical question", "vi": "Câu hỏi lâm sàng"},
    "overdue": {"en": "overdue {t}", "vi": "quá hạn {t}"},
    "left": {"en": "{t} left", "vi": "còn {t}"},
    "no_case": {"en": "Open a case from the worklist.", "vi": "Chọn một ca trong danh sách."},
    "no_images": {"en": "No DICOM series on this case.", "vi": "Ca này chưa có ảnh DICOM."},
    "no_slides": {"en": "No slides on this case.", "vi": "Ca này chưa có tiêu bản."},
    "slice_info": {
        "en": "Slice {n}/{total} · W {w:g} / L {c:g} · zoom {z:g}x · {overlay}",
        "vi": "Lát {n}/{total} · W {w:g} / L {c:g} · phóng {z:g}x · {overlay}",
    },
    "overlay_on": {"en": "AI overlay on ({k} marks)", "vi": "Lớp phủ AI bật ({k} dấu)"},
    "overlay_off": {"en": "AI overlay off", "vi": "Lớp phủ AI tắt"},
    "findings_missing": {
        "en": "This server has no findings API yet: AI findings cannot be shown.",
        "vi": "Máy chủ chưa có API phát hiện AI.",
    },
    "no_findings": {"en": "No findings on this case.", "vi": "Ca này chưa có phát hiện."},
    "saved": {"en": "Draft saved.", "vi": "Đã lưu nháp."},
    "signed": {"en": "Opinion signed; the case is concluded.", "vi": "Đã ký; ca đã kết luận."},
    "info_requested": {"en": "Information requested from the referrer.", "vi": "Đã yêu cầu bổ sung."},
    "review_started": {"en": "You took the case for review.", "vi": "Bạn đã nhận đọc ca."},
    "reviewed": {"en": "Finding {id}: {state}.", "vi": "Phát hiện {id}: {state}."},
    "created": {"en": "Case {id} created (draft).", "vi": "Đã tạo ca {id} (nháp)."},
    "uploaded": {
        "en": "{stored} stored, {duplicates} already there, {failed} refused.",
        "vi": "{stored} đã lưu, {duplicates} trùng, {failed} bị từ chối.",
    },
    "submitted": {"en": "Submitted to the specialists.", "vi": "Đã gửi chuyên gia."},
    "no_opinion": {"en": "No signed opinion yet.", "vi": "Chưa có ý kiến đã ký."},
    "models_missing": {
        "en": "This server has no model registry API yet.",
        "vi": "Máy chủ chưa có API danh mục mô hình.",
    },
    "agreement_missing": {
        "en": "This server has no agreement statistics API yet.",
        "vi": "Máy chủ chưa có API thống kê đồng thuận.",
    },
    "video_started": {"en": "Video session: {url}", "vi": "Phiên video: {url}"},
    "timeline": {"en": "Timeline", "vi": "Diễn biến"},
    "error": {"en": "Error: {detail}", "vi": "Lỗi: {detail}"},
}


def text(lang: str, key: str, **values: Any) -> str:
    """A message in ``lang`` (English when missing), formatted with ``values``."""
    entry = MESSAGES.get(key, {})
    template = entry.get(lang) or entry.get(DEFAULT_LANGUAGE) or key
    return template.format(**values) if values else template


def component_args(name: str, lang: str) -> dict[str, Any]:
    """Constructor arguments of the named component in ``lang``."""
    entry = LOCALES.get(name, {})
    return dict(entry.get(lang) or entry.get(DEFAULT_LANGUAGE) or {})
