import ArgumentParser

extension XRLab {
    /// Every subcommand, one per line (one file per command in this folder).
    static let allSubcommands: [ParsableCommand.Type] = [
        Demo.self,
        Embed.self,
        ConvertCommand.self,
        Validate.self,
        PlanCommand.self,
        RunCommand.self,
        MergeCommand.self,
        SubmitCommand.self,
        StatusCommand.self,
        IngestCommand.self,
        CheckCommand.self,
        PackCommand.self,
        VerifyCommand.self,
        InspectCommand.self,
        DiffCommand.self,
        UnpackCommand.self,
        PredictCommand.self,
        KeygenCommand.self,
        SignCommand.self,
        BenchCommand.self,
        // Old names of `bench train|report|gemm`, hidden; removed in the next release.
        OldName<BenchTrain>.self,
        OldName<BenchReport>.self,
        OldName<BenchGEMM>.self,
        TuneCommand.self,
        TokenizerCommand.self,
        ScoreCommand.self,
        ReportCommand.self,
        BudgetCommand.self,
        SuggestCommand.self
    ]
}
