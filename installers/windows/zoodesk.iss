; Inno Setup 6 script of the ZooDesk installer for Windows.
;
; Installs for the current user without administrator rights (a facility manager
; may still choose "all users" in the first dialog, or pass /ALLUSERS), adds a
; start-menu entry, lets .zdbundle files (offline bundles) open in ZooDesk, and
; removes itself without touching the user's models, settings and logs unless the
; user asks for it.
;
; installers/build.py compiles it after PyInstaller; by hand, from the repository root:
;   iscc /DAppVersion=0.1.0 /DVariant=directml installers\windows\zoodesk.iss
; The version may also come from the ZOODESK_VERSION environment variable, the
; variant from ZOODESK_VARIANT.  BundleDir (default dist\zoodesk) and OutputDir
; (default dist\installers) can be given the same way.

#ifndef AppVersion
  #define AppVersion GetEnv("ZOODESK_VERSION")
#endif
#if AppVersion == ""
  #error Give the version: /DAppVersion=X.Y.Z or the ZOODESK_VERSION environment variable
#endif
#ifndef Variant
  #define Variant GetEnv("ZOODESK_VARIANT")
#endif
#if Variant == ""
  #undef Variant
  #define Variant "cpu"
#endif
#ifndef BundleDir
  #define BundleDir AddBackslash(SourcePath) + "..\..\dist\zoodesk"
#endif
#ifndef OutputDir
  #define OutputDir AddBackslash(SourcePath) + "..\..\dist\installers"
#endif

#define AppName "ZooDesk"
#define AppExe "zoodesk.exe"
#define BundleProgId "ZooDesk.Bundle"

[Setup]
; Never change the AppId: it is how a new version finds and replaces the old one.
AppId={{8F3C2A5E-6B1D-4E7A-9C42-5D0B7E1F2A63}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=ZooDesk developers
AppComments=Run BioImage Model Zoo models offline on folders of microscopy images ({#Variant} build)
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog commandline
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#OutputDir}
OutputBaseFilename=zoodesk-{#AppVersion}-windows-x64-{#Variant}-setup
SetupIconFile=..\..\resources\icons\zoodesk.ico
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName} {#AppVersion}
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
ChangesAssociations=yes
ChangesEnvironment=yes
CloseApplications=yes

[Tasks]
Name: "associate"; Description: "Open ZooDesk offline bundles (.zdbundle) with ZooDesk"
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add zoodesk-cli to the PATH (for the command line and scripts)"; Flags: unchecked

[InstallDelete]
; Libraries of the version being replaced must not mix with the new ones.
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Registry]
; HKA is the current user's classes for a per-user install, the machine's otherwise.
Root: HKA; Subkey: "Software\Classes\.zdbundle"; ValueType: string; ValueName: ""; ValueData: "{#BundleProgId}"; Flags: uninsdeletevalue; Tasks: associate
Root: HKA; Subkey: "Software\Classes\.zdbundle"; ValueType: string; ValueName: "Content Type"; ValueData: "application/x-zoodesk-bundle"; Flags: uninsdeletevalue; Tasks: associate
Root: HKA; Subkey: "Software\Classes\.zdbundle\OpenWithProgids"; ValueType: string; ValueName: "{#BundleProgId}"; ValueData: ""; Flags: uninsdeletevalue; Tasks: associate
Root: HKA; Subkey: "Software\Classes\{#BundleProgId}"; ValueType: string; ValueName: ""; ValueData: "ZooDesk offline bundle"; Flags: uninsdeletekey; Tasks: associate
Root: HKA; Subkey: "Software\Classes\{#BundleProgId}\DefaultIcon"; ValueType: string; ValueName: ""; ValueData: "{app}\{#AppExe},0"; Tasks: associate
; The desktop entry opens the application with the bundle (see installers/entry_gui.py).
Root: HKA; Subkey: "Software\Classes\{#BundleProgId}\shell\open\command"; ValueType: string; ValueName: ""; ValueData: """{app}\{#AppExe}"" ""%1"""; Tasks: associate
Root: HKA; Subkey: "Software\Classes\Applications\{#AppExe}\SupportedTypes"; ValueType: string; ValueName: ".zdbundle"; ValueData: ""; Flags: uninsdeletekey; Tasks: associate
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; Check: NeedsAddPath(ExpandConstant('{app}')); Tasks: addtopath

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
{ The user PATH holds the install folder only when the "addtopath" task was chosen. }
function NeedsAddPath(Dir: string): Boolean;
var
  Path: string;
begin
  if not RegQueryStringValue(HKCU, 'Environment', 'Path', Path) then
    Result := True
  else
    Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Path) + ';') = 0;
end;

procedure RemoveFromPath(Dir: string);
var
  Path: string;
  P: Integer;
begin
  if not RegQueryStringValue(HKCU, 'Environment', 'Path', Path) then
    exit;
  P := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Path) + ';');
  if P = 0 then
    exit;
  { P is where Dir starts in Path; take it out with the separator before it, or
    after it when it comes first. }
  if P = 1 then
    Delete(Path, 1, Length(Dir) + 1)
  else
    Delete(Path, P - 1, Length(Dir) + 1);
  RegWriteExpandStringValue(HKCU, 'Environment', 'Path', Path);
end;

{ Where ZooDesk keeps models, settings and logs: ZOODESK_HOME, else the
  platform's per-user data folder (zoodesk.settings.zoodesk_home). }
function UserDataDir(): string;
begin
  Result := GetEnv('ZOODESK_HOME');
  if Result = '' then
    Result := ExpandConstant('{localappdata}\ZooDesk');
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  Data: string;
begin
  if CurUninstallStep = usUninstall then
    RemoveFromPath(ExpandConstant('{app}'));
  if CurUninstallStep = usPostUninstall then
  begin
    Data := UserDataDir();
    { Kept unless the user says otherwise; a silent uninstall always keeps it. }
    if DirExists(Data) and not UninstallSilent() then
      if MsgBox('Also delete your ZooDesk models, settings and logs?' + #13#10 + #13#10 +
                Data + #13#10 + #13#10 +
                'Choose No to keep them for a later installation.',
                mbConfirmation, MB_YESNO or MB_DEFBUTTON2) = IDYES then
        DelTree(Data, True, True, True);
  end;
end;
