"""The organizations' pages (issue 15): the list and the form to make one, the switcher, an
organization's members and invitations, and the page an invitation link opens. Every write goes
through ``accounts.organizations``; who may do what is ``accounts.roles``'."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from . import acting as acting_account
from . import audit, organizations, roles
from .forms import InviteForm, MemberCapForm, OrganizationForm, RoleForm, TransferForm
from .models import Invitation, Membership, Role


def _membership(request: HttpRequest, org_id: int) -> Membership:
    """The signed-in user's membership of organization ``org_id``, or 404 (an outsider learns
    nothing of it)."""
    return get_object_or_404(
        Membership.objects.select_related("organization__account"),
        organization_id=org_id,
        user=request.user,
    )


def _network(request: HttpRequest) -> str:
    return audit.network_of(request)


@login_required
@require_http_methods(["GET", "POST"])
def organizations_page(request: HttpRequest) -> HttpResponse:
    """Your organizations, and a form to make one (you become its owner and act for it)."""
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        organization = organizations.create(
            owner=request.user,  # type: ignore[arg-type]
            name=form.cleaned_data["name"],
            network=_network(request),
        )
        acting_account.switch(request, organization.account.pk)
        messages.success(
            request, _("Organization “%(name)s” created.") % {"name": organization.name}
        )
        return redirect("organization", org_id=organization.pk)
    return render(
        request,
        "accounts/organizations.html",
        {
            "nav": "organizations",
            "form": form,
            "memberships": organizations.memberships_of(request.user),
        },
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def switch(request: HttpRequest) -> HttpResponse:
    """The switcher: act for another of your accounts, then back to where you were."""
    if not acting_account.switch(request, request.POST.get("account", "")):
        messages.error(request, _("You are not a member of that organization."))
    target = request.POST.get("next") or reverse("dashboard")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("dashboard")
    return redirect(target)


def _members_context(request: HttpRequest, membership: Membership, **forms: Any) -> dict[str, Any]:
    organization = membership.organization
    can_manage = roles.allows(membership.role, roles.MEMBERS)
    is_owner = membership.role == Role.OWNER
    members = list(organization.memberships.select_related("user").order_by("joined_at", "pk"))
    rows = [
        {
            "membership": m,
            "role_form": RoleForm(initial={"role": m.role}, prefix=f"m{m.pk}"),
            "cap_form": MemberCapForm(
                initial={"spend_cap": m.spend_cap, "spend_cap_period": m.spend_cap_period},
                prefix=f"c{m.pk}",
            ),
        }
        for m in members
    ]
    others = [(m.pk, m.user.email) for m in members if m.role != Role.OWNER]
    return {
        "nav": "organizations",
        "organization": organization,
        "me": membership,
        "can_manage": can_manage,
        "is_owner": is_owner,
        "rows": rows if can_manage else [],
        "member_count": len(members),
        "invitations": organization.invitations.filter(status=Invitation.Status.PENDING)
        .select_related("invited_by")
        .order_by("-created_at")
        if can_manage
        else [],
        "invite_form": forms.get("invite_form") or InviteForm(),
        "rename_form": forms.get("rename_form")
        or OrganizationForm(initial={"name": organization.name}),
        "transfer_form": TransferForm(members=others) if others else None,
    }


@login_required
@require_http_methods(["GET", "POST"])
def organization(request: HttpRequest, org_id: int) -> HttpResponse:
    """An organization's page: members and their roles and caps, invitations, the owner's
    settings. Every member may open it (and leave); managing needs the owner or an admin."""
    membership = _membership(request, org_id)
    organization = membership.organization
    if request.method == "GET":
        return render(request, "accounts/organization.html", _members_context(request, membership))
    action = request.POST.get("action", "")
    network = _network(request)
    actor = request.user
    can_manage = roles.allows(membership.role, roles.MEMBERS)
    try:
        if action == "leave":
            organizations.leave(membership=membership, network=network)
            acting_account.switch(request, "personal")
            messages.success(request, _("You left “%(name)s”.") % {"name": organization.name})
            return redirect("organizations")
        if action == "rename" and membership.role == Role.OWNER:
            form = OrganizationForm(request.POST)
            if not form.is_valid():
                context = _members_context(request, membership, rename_form=form)
                return render(request, "accounts/organization.html", context, status=400)
            organizations.rename(
                organization=organization,
                name=form.cleaned_data["name"],
                actor=actor,  # type: ignore[arg-type]
                network=network,
            )
            messages.success(request, _("Organization renamed."))
        elif action == "transfer" and membership.role == Role.OWNER:
            others = list(
                organization.memberships.exclude(role=Role.OWNER).values_list("pk", "user__email")
            )
            transfer_form = TransferForm(request.POST, members=others)
            if not transfer_form.is_valid():
                raise organizations.OrganizationError(_("Choose a member of this organization."))
            target = organization.memberships.get(pk=transfer_form.cleaned_data["member"])
            organizations.transfer(
                organization=organization,
                to=target,
                actor=actor,  # type: ignore[arg-type]
                network=network,
            )
            messages.success(
                request, _("%(email)s is now the owner.") % {"email": target.user.email}
            )
        elif action == "invite" and can_manage:
            invite_form = InviteForm(request.POST)
            if not invite_form.is_valid():
                context = _members_context(request, membership, invite_form=invite_form)
                return render(request, "accounts/organization.html", context, status=400)
            organizations.invite(
                organization=organization,
                email=invite_form.cleaned_data["email"],
                role=invite_form.cleaned_data["role"],
                actor=actor,  # type: ignore[arg-type]
                network=network,
            )
            messages.success(
                request,
                _("Invitation sent to %(email)s.") % {"email": invite_form.cleaned_data["email"]},
            )
        elif action == "revoke_invitation" and can_manage:
            invitation = get_object_or_404(
                organization.invitations, pk=_int(request.POST.get("invitation"))
            )
            organizations.revoke_invitation(
                invitation=invitation,
                actor=actor,  # type: ignore[arg-type]
                network=network,
            )
            messages.success(request, _("Invitation revoked."))
        elif action in ("role", "cap", "remove") and can_manage:
            target = get_object_or_404(
                organization.memberships.select_related("user"),
                pk=_int(request.POST.get("member")),
            )
            if action == "role":
                role_form = RoleForm(request.POST, prefix=f"m{target.pk}")
                if not role_form.is_valid():
                    raise organizations.OrganizationError(_("Choose a role."))
                organizations.change_role(
                    membership=target,
                    role=role_form.cleaned_data["role"],
                    actor=actor,  # type: ignore[arg-type]
                    network=network,
                )
                messages.success(request, _("Role saved."))
            elif action == "cap":
                cap_form = MemberCapForm(request.POST, prefix=f"c{target.pk}")
                if not cap_form.is_valid():
                    raise organizations.OrganizationError(
                        " ".join(str(e) for errors in cap_form.errors.values() for e in errors)
                    )
                organizations.set_cap(
                    membership=target,
                    cap=cap_form.cleaned_data["spend_cap"],
                    period=cap_form.cleaned_data["spend_cap_period"],
                    actor=actor,  # type: ignore[arg-type]
                    network=network,
                )
                messages.success(request, _("Spend cap saved."))
            else:
                if target.pk == membership.pk:
                    raise organizations.OrganizationError(_("To leave, use “Leave organization”."))
                organizations.remove(
                    membership=target,
                    actor=actor,  # type: ignore[arg-type]
                    network=network,
                )
                messages.success(
                    request,
                    _("%(email)s was removed; their keys are revoked.")
                    % {"email": target.user.email},
                )
        else:
            return acting_account.forbidden(request)
    except organizations.OrganizationError as error:
        messages.error(request, str(error))
        context = _members_context(request, membership)
        return render(request, "accounts/organization.html", context, status=400)
    return redirect("organization", org_id=organization.pk)


def _int(value: Any) -> int:
    text = str(value or "")
    return int(text) if text.isascii() and text.isdigit() and len(text) < 12 else 0


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """What an invitation link opens: who invites you where, as what; accepting needs you
    signed in (or signed up) with the invited address."""
    try:
        found = organizations.invitation_of(token)
    except organizations.OrganizationError as error:
        return render(
            request,
            "accounts/invitation.html",
            {"error": str(error)},
            status=404,
        )
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect(f"{reverse('account_login')}?next={request.path}")
        try:
            membership = organizations.accept(
                invitation=found,
                user=request.user,  # type: ignore[arg-type]
                network=_network(request),
            )
        except organizations.OrganizationError as error:
            messages.error(request, str(error))
            return render(request, "accounts/invitation.html", {"invitation": found}, status=400)
        acting_account.switch(request, membership.organization.account.pk)
        messages.success(
            request,
            _("Welcome to %(name)s. You now act for it; the switcher at the top goes back.")
            % {"name": membership.organization.name},
        )
        return redirect("dashboard")
    return render(request, "accounts/invitation.html", {"invitation": found})
